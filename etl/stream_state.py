"""The streaming job's state, in the online store's Redis (durable with its AOF), under
``skewless:stream:<project>:`` (``skewless.features.stream_status.prefix``):

* ``s:<view>:<entity>`` — one JSON blob per view and entity: its per-hop partials
  (``etl.windows``) for the buckets that can still change a value (the longest window
  back from now; at least the newest one). Removed once its last change point is
  published: memory is bounded by the active entities and the longest window. The job
  keeps a copy of the blobs it wrote or read in its own memory (``StreamState.cache``).
* ``due:<view>`` — sorted set, entity -> the next boundary (unix s) where one of its values
  changes (a bucket enters or leaves a window), or "now" when a late event changed the
  current value: the publisher's timers.
* ``seen:<contract>`` — sorted set, event id -> Kafka time it arrived: ids seen within
  ``stream.dedupe_horizon_s`` are retries and dropped (the first copy counts).
* ``parked:<view>`` — hash, event id -> an event whose enrichment has not arrived yet
  (a label read before its transaction), tried again with every micro-batch.
* ``enrich:<contract>:<day>`` — hashes, event id -> the columns another source joins by
  it (a label gets its transaction's merchant), kept ``stream.enrich_horizon_s``.
* ``meta`` — the last micro-batch applied and the status figures (``stream_status``).

A micro-batch's changes are one ``MULTI``/``EXEC`` together with its batch id, so a
batch Spark replays after a crash is recognised and skipped: each event is applied
exactly once (see ``etl.stream``).
"""

from __future__ import annotations

import itertools
import json
import re
import time
from typing import Any, Iterable

import numpy as np
import orjson
import pandas as pd

from etl import windows
from skewless.features import stream_status
from skewless.features.dsl import WindowedView


def entity_id(values: Iterable[Any]) -> str:
    """An entity's key values as one string (compact JSON of their text)."""
    return orjson.dumps([str(v) for v in values]).decode()


_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


def entity_ids(columns: list) -> list[str]:
    """``entity_id`` of every row of these key columns (sequences of equal length), at once:
    text that JSON writes as is (no quote, backslash or control character) is joined
    directly; anything else goes through ``entity_id``. Same strings either way."""
    texts = [[v if type(v) is str else str(v) for v in col] for col in columns]
    if not texts or not texts[0]:
        return []
    if any(_NEEDS_ESCAPE.search("".join(t)) for t in texts):
        return [entity_id(kv) for kv in zip(*texts)]
    if len(texts) == 1:
        return ['["' + v + '"]' for v in texts[0]]
    return ['["' + '","'.join(kv) + '"]' for kv in zip(*texts)]


READ_TRUST_S = 60.0  # how long a blob read from Redis (not written by this process) is trusted


class StreamState:
    """The state in Redis, with the blobs this process wrote or read also kept in memory
    (``cache``): Redis stays the truth (a restart reads it back), the copy saves a round
    trip per (view, entity) on every batch and publication. Only the
    job writes its blobs, under its lock, and the copy is updated after each ``EXEC`` that
    changed them (``remember``, ``forget``); an entry past its key's TTL is read again."""

    def __init__(self, client, project: str, cache_entities: int = 1_000_000):
        self.r = client
        self.project = project
        self.prefix = stream_status.prefix(project)
        self.meta = stream_status.meta_key(project)
        # view -> entity id -> (monotonic expiry, blob). Bytes, not the decoded columns: the
        # garbage collector does not walk bytes (decoding is a C call per blob). At most
        # ``cache_entities`` per view: the least recently written are dropped (read again).
        self.cache: dict[str, dict[str, tuple[float, bytes]]] = {}
        self.cache_entities = cache_entities

    # -- keys
    def blob_key(self, view: str, eid: str) -> str:
        return f"{self.prefix}:s:{view}:{eid}"

    def due_key(self, view: str) -> str:
        return f"{self.prefix}:due:{view}"

    def seen_key(self, contract: str) -> str:
        return f"{self.prefix}:seen:{contract}"

    def parked_key(self, view: str) -> str:
        return f"{self.prefix}:parked:{view}"

    def parked(self, view: str) -> list[dict]:
        """Events of the view waiting for their enrichment (``_ts`` in unix µs)."""
        return [json.loads(v) for v in self.r.hvals(self.parked_key(view))]

    def enrich_key(self, contract: str, day: int) -> str:
        return f"{self.prefix}:enrich:{contract}:{day}"

    # -- meta
    def status(self) -> stream_status.StreamStatus | None:
        return stream_status.read(self.r, self.project)

    def reset(self) -> int:
        """Forget everything the stream keeps (a new checkpoint replays from the start)."""
        n = 0
        self.cache.clear()
        for key in self.r.scan_iter(match=f"{self.prefix}:*", count=1000):
            n += self.r.delete(key)
        return n

    # -- blobs
    def load(self, view: WindowedView, eids: list[str]) -> pd.DataFrame:
        """The stored partials of these entities, one frame (entities with none: absent)."""
        return decode_columns(view, eids, self.blobs(view.name, eids))

    def blobs(self, view: str, eids: list[str]) -> list[dict | None]:
        """The decoded blobs of these entities (None: none stored): the memory's copy, and
        Redis for what it does not hold (then kept)."""
        cache = self.cache.setdefault(view, {})
        now = time.monotonic()
        out: list[dict | None] = []
        missing: list[int] = []
        loads = orjson.loads
        for i, e in enumerate(eids):
            hit = cache.get(e)
            if hit is not None and hit[0] > now:
                out.append(loads(hit[1]))
            else:
                out.append(None)
                missing.append(i)
        if missing:
            raw = self.r.mget([self.blob_key(view, eids[i]) for i in missing])
            for i, blob in zip(missing, raw):
                if blob is None:
                    cache.pop(eids[i], None)
                    continue
                out[i] = orjson.loads(blob)
                # Its TTL is at least an hour past its last change point, when the job
                # deletes it: a copy trusted for a minute cannot outlive it.
                cache[eids[i]] = (now + READ_TRUST_S, blob)
            self._bound(cache)
        return out

    def _bound(self, cache: dict) -> None:
        over = len(cache) - self.cache_entities
        if over > 0:
            for e in list(itertools.islice(cache, over)):
                del cache[e]

    def remember(self, view: str, blobs: dict[str, tuple[float, bytes]]) -> None:
        """Blobs just written (entity id -> (TTL s, blob)), after their ``EXEC``."""
        now = time.monotonic()
        cache = self.cache.setdefault(view, {})
        for e, (ttl, blob) in blobs.items():
            cache.pop(e, None)  # to the end: the least recently written go first
            cache[e] = (now + ttl, blob)
        self._bound(cache)

    def forget(self, view: str, eids: Iterable[str]) -> None:
        """Blobs just deleted, after their ``EXEC``."""
        cache = self.cache.get(view)
        if cache:
            for e in eids:
                cache.pop(e, None)

    def seen(self, contract: str, ids: list[str]) -> list[bool]:
        if not ids:
            return []
        scores = self.r.zmscore(self.seen_key(contract), ids)
        return [s is not None for s in scores]

    def lookup(self, contract: str, ids: list[str], days: Iterable[int]) -> dict[str, dict]:
        found: dict[str, dict] = {}
        if not ids:
            return found
        with self.r.pipeline(transaction=False) as pipe:
            days = sorted(set(days), reverse=True)
            for day in days:
                pipe.hmget(self.enrich_key(contract, day), ids)
            for values in pipe.execute():
                for i, v in zip(ids, values):
                    if v is not None and i not in found:
                        found[i] = json.loads(v)
        return found


def _column(name: str, values: np.ndarray) -> list:
    """A partial column as JSON-able Python values (sums as decimal strings: exact)."""
    if name.startswith("_sum_"):
        return [str(int(x)) for x in values]
    if name in ("_k", "_n", "_last_ts"):
        return values.astype("int64").tolist()
    if name.startswith(("_min_", "_max_")):
        return [None if x != x else x for x in values.astype("float64").tolist()]
    if name.startswith("_set_"):
        return [list(x) for x in values]
    return [None if windows._isnull(x) else (x.item() if hasattr(x, "item") else x) for x in values]


def encode_blobs(view: WindowedView, partials: pd.DataFrame) -> dict[str, bytes]:
    """Per entity of ``partials`` (sorted by entity), its partials as one JSON blob of columns."""
    if partials.empty:
        return {}
    keys = view.join_keys
    names = ["_k"] + windows.partial_names(view)
    cols = {n: _column(n, partials[n].to_numpy()) for n in names}
    key_cols = [partials[k].to_numpy() for k in keys]
    change = np.zeros(len(partials) - 1, dtype=bool)
    for c in key_cols:
        change |= c[1:] != c[:-1]
    starts = np.r_[0, np.flatnonzero(change) + 1]
    ends = np.r_[starts[1:], len(partials)]
    eids = entity_ids([c[starts] for c in key_cols])
    if len(set(eids)) != len(eids):
        raise ValueError("partials must be grouped by entity")
    dumps = orjson.dumps
    return {e: dumps({n: cols[n][a:b] for n in names}) for e, a, b in zip(eids, starts.tolist(), ends.tolist())}


def decode_blobs(view: WindowedView, eids: list[str], blobs: list[bytes | None]) -> pd.DataFrame:
    """The partials of the entities whose blob is not None, as one frame (``encode_blobs``' inverse)."""
    return decode_columns(view, eids, [None if b is None else orjson.loads(b) for b in blobs])


def decode_columns(view: WindowedView, eids: list[str], blobs: list[dict | None]) -> pd.DataFrame:
    """``decode_blobs`` of blobs already decoded from JSON."""
    keys = view.join_keys
    names = ["_k"] + windows.partial_names(view)
    cols: dict[str, list] = {n: [] for n in keys + names}
    for eid, d in zip(eids, blobs):
        if d is None:
            continue
        n = len(d["_k"])
        for key, value in zip(keys, orjson.loads(eid)):
            cols[key].extend([value] * n)
        for name in names:
            cols[name].extend(d[name])
    data: dict[str, Any] = {}
    for k in keys:
        data[k] = np.empty(len(cols[k]), dtype=object)
        data[k][:] = cols[k]
    for name in names:
        col = cols[name]
        if name.startswith("_sum_"):
            data[name] = np.array([int(x) for x in col], dtype=object)
        elif name in ("_k", "_n", "_last_ts"):
            data[name] = np.array(col, dtype="int64")
        elif name.startswith(("_min_", "_max_")):
            data[name] = np.array([np.nan if x is None else x for x in col], dtype="float64")
        elif name.startswith("_set_"):
            data[name] = pd.Series([tuple(x) for x in col], dtype=object)
        else:
            data[name] = pd.Series(col, dtype=object)
    return pd.DataFrame(data)  # columns in order: keys, then names
