"""The streaming job's state, in the online store's Redis (durable with its AOF), under
``skewless:stream:<project>:`` (``skewless.features.stream_status.prefix``):

* ``s:<view>:<entity>`` — one JSON blob per view and entity: its per-hop partials
  (``etl.windows``) for the buckets that can still change a value (the longest window
  back from now; at least the newest one). Removed once its last change point is
  published: memory is bounded by the active entities and the longest window.
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

import json
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


class StreamState:
    def __init__(self, client, project: str):
        self.r = client
        self.project = project
        self.prefix = stream_status.prefix(project)
        self.meta = stream_status.meta_key(project)

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
        for key in self.r.scan_iter(match=f"{self.prefix}:*", count=1000):
            n += self.r.delete(key)
        return n

    # -- blobs
    def load(self, view: WindowedView, eids: list[str]) -> pd.DataFrame:
        """The stored partials of these entities, one frame (entities with none: absent)."""
        raw = self.r.mget([self.blob_key(view.name, e) for e in eids]) if eids else []
        return decode_blobs(view, eids, raw)

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
    gid = partials.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    starts = np.r_[0, np.flatnonzero(np.diff(gid)) + 1]
    if len(np.unique(gid)) != len(starts):
        raise ValueError("partials must be grouped by entity")
    ends = np.r_[starts[1:], len(gid)]
    key_rows = partials[keys].iloc[starts].itertuples(index=False, name=None)
    return {entity_id(kv): orjson.dumps({n: cols[n][a:b] for n in names})
            for kv, a, b in zip(key_rows, starts.tolist(), ends.tolist())}


def decode_blobs(view: WindowedView, eids: list[str], blobs: list[bytes | None]) -> pd.DataFrame:
    """The partials of the entities whose blob is not None, as one frame (``encode_blobs``' inverse)."""
    keys = view.join_keys
    names = ["_k"] + windows.partial_names(view)
    cols: dict[str, list] = {n: [] for n in keys + names}
    for eid, blob in zip(eids, blobs):
        if blob is None:
            continue
        d = orjson.loads(blob)
        n = len(d["_k"])
        for key, value in zip(keys, json.loads(eid)):
            cols[key].extend([value] * n)
        for name in names:
            cols[name].extend(d[name])
    data: dict[str, Any] = {k: pd.Series(cols[k], dtype=object) for k in keys}
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
    return pd.DataFrame(data)[keys + names]
