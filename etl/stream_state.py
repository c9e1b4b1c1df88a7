"""The streaming job's state, in the online store's Redis (durable with its AOF), under
``skewless:stream:<project>:`` (``skewless.features.stream_status.prefix``):

* ``s:<view>:<entity>`` — one blob per view and entity (``encode_columns``): its per-hop partials
  (``etl.windows``) for the buckets that can still change a value (the longest window
  back from now; at least the newest one; less what no coming value reads:
  ``windows.forget_dominated``). Removed, by the publisher, once its last change point is
  published (no TTL: a key written by an older version has one, an hour past that point):
  memory is bounded by the active entities and the longest window. The job keeps a copy
  of the blobs it wrote or read in its own memory (``StreamState.cache``).
* ``due:<view>`` — sorted set, entity -> the next boundary (unix s) where one of its values
  changes (a bucket enters or leaves a window), or "now" when a late event changed the
  current value: the publisher's timers.
* ``seen:<contract>`` — sorted set, event id -> Kafka time it arrived: ids seen within
  ``stream.dedupe_horizon_s`` are retries and dropped (the first copy counts).
* ``parked:<view>`` — hash, event id -> an event whose enrichment has not arrived yet
  (a label read before its transaction), tried again with every micro-batch.
* ``enrich:<contract>:<day>`` — hashes, event id -> the columns another source joins by
  it (a label gets its transaction's merchant), kept ``stream.enrich_horizon_s``.
* ``offsets`` — hash, ``<topic>:<partition>`` -> the next Kafka offset to apply: every record
  before it is applied. The job starts reading there (``startingOffsets``).
* ``meta`` — the last micro-batch applied and the status figures (``stream_status``).

A micro-batch's changes are one ``MULTI``/``EXEC`` together with the offsets it reaches, so
the state and its position in Kafka move together: a record below its partition's offset
is a replay and skipped, and a job killed at any point starts again from the offsets of
its last ``EXEC``: each event is applied exactly once (see ``etl.stream``).
"""

from __future__ import annotations

import itertools
import json
import re
import struct
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


# Text that JSON does not write as is: a quote, a backslash or a control character.
NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


def entity_ids(columns: list) -> list[str]:
    """``entity_id`` of every row of these key columns (sequences of equal length), at once:
    text that JSON writes as is (no quote, backslash or control character) is joined
    directly; anything else goes through ``entity_id``. Same strings either way."""
    texts = [[v if type(v) is str else str(v) for v in col] for col in columns]
    if not texts or not texts[0]:
        return []
    if any(NEEDS_ESCAPE.search("".join(t)) for t in texts):
        return [entity_id(kv) for kv in zip(*texts)]
    if len(texts) == 1:
        return ['["' + v + '"]' for v in texts[0]]
    return ['["' + '","'.join(kv) + '"]' for kv in zip(*texts)]


class StreamState:
    """The state in Redis, with the blobs this process wrote or read also kept in memory
    (``cache``): Redis stays the truth (a restart reads it back), the copy saves a round
    trip per (view, entity) on every batch and publication. Only the
    job writes its blobs, under its lock, and the copy is updated after each ``EXEC`` that
    changed them (``remember``, ``forget``)."""

    def __init__(self, client, project: str, cache_entities: int = 1_000_000):
        self.r = client
        self.project = project
        self.prefix = stream_status.prefix(project)
        self.meta = stream_status.meta_key(project)
        # view -> entity id -> blob. Bytes, not the decoded columns: the
        # garbage collector does not walk bytes (decoding is a C call per blob). At most
        # ``cache_entities`` per view: the least recently written are dropped (read again;
        # the order is kept only near that bound: moving a key to the end costs a pop).
        self.cache: dict[str, dict[str, bytes]] = {}
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

    def offsets_key(self) -> str:
        return f"{self.prefix}:offsets"

    def offsets(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the next offset to apply (every record before it is applied)."""
        out = {}
        for k, v in self.r.hgetall(self.offsets_key()).items():
            topic, _, part = (k.decode() if isinstance(k, bytes) else k).rpartition(":")
            out[(topic, int(part))] = int(v)
        return out

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
        return windows.frame(self.load_columns(view, eids))

    def load_columns(self, view: WindowedView, eids: list[str]) -> "windows.Columns":
        """``load`` as ``Columns``: grouped by entity in the order of ``eids``."""
        return decode_columns(view, eids, self.blobs(view.name, eids))

    def load_coded(self, view: WindowedView, eids: list[str]) -> tuple["windows.Columns", np.ndarray]:
        """``load_columns``, and each row's entity as its position in ``eids``."""
        blobs = self.blobs(view.name, eids)
        cols, counts = _decode(view, eids, blobs)
        present = np.flatnonzero(np.array([b is not None for b in blobs], dtype=bool))
        return cols, np.repeat(present, counts)

    def blobs(self, view: str, eids: list[str]) -> list[bytes | None]:
        """The blobs of these entities (None: none stored): the memory's copy, and Redis for
        what it does not hold (then kept)."""
        cache = self.cache.setdefault(view, {})
        out: list[bytes | None] = list(map(cache.get, eids))
        missing = [i for i, b in enumerate(out) if b is None]
        if missing:
            raw = self.r.mget([self.blob_key(view, eids[i]) for i in missing])
            for i, blob in zip(missing, raw):
                if blob is None:
                    cache.pop(eids[i], None)
                    continue
                out[i] = blob
                # (A key an older version wrote has a TTL, an hour past its last change
                # point, where the publisher deletes it: the copy cannot outlive it.)
                cache[eids[i]] = blob
            self._bound(cache)
        return out

    def _bound(self, cache: dict) -> None:
        over = len(cache) - self.cache_entities
        if over > 0:
            for e in list(itertools.islice(cache, over)):
                del cache[e]

    def remember(self, view: str, blobs: dict[str, bytes]) -> None:
        """Blobs just written (entity id -> blob), after their ``EXEC``."""
        cache = self.cache.setdefault(view, {})
        if len(cache) + len(blobs) > self.cache_entities:
            pop = cache.pop
            for e in blobs:
                pop(e, None)  # to the end: the least recently written go first
        cache.update(blobs)
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


# A blob: u8 1, u32 rows, u32 extra bytes, then the numeric partials as packed little-endian
# records (``_layout``: _k, _n, _last_ts, sums as int64, minima and maxima as float64), then
# the others as one JSON object of columns (last values, distinct sets; a sum column that
# does not fit int64, as decimal strings: exact). The numeric part of many entities is then
# one ``b"".join`` and one ``np.frombuffer`` (no Python object per value).
_HEAD = struct.Struct("<BII")
_TAG = 1  # a blob's first byte (a blob of the former JSON layout starts with "{")
_HEAD_SIZE = _HEAD.size
_LAYOUTS: dict[tuple, tuple[np.dtype, list[str]]] = {}


def _layout(view: WindowedView) -> tuple[np.dtype, list[str]]:
    names = ["_k"] + windows.partial_names(view)
    key = tuple(names)
    if key not in _LAYOUTS:
        numeric = [(n, "<i8") for n in names if n in ("_k", "_n", "_last_ts") or n.startswith("_sum_")]
        numeric += [(n, "<f8") for n in names if n.startswith(("_min_", "_max_"))]
        others = [n for n in names if n.startswith(("_last_", "_set_")) and n != "_last_ts"]
        _LAYOUTS[key] = (np.dtype(numeric), others)
    return _LAYOUTS[key]


def _plain_value(x: Any) -> Any:
    if windows._isnull(x):
        return None
    return x.item() if hasattr(x, "item") else x


def encode_columns(view: WindowedView, partials: windows.Columns) -> tuple[list[str], list[bytes], np.ndarray]:
    """Per entity of ``partials`` (``Columns`` grouped by entity): its id, its blob, and its
    rows' end in ``partials``."""
    n = windows.nrows(partials)
    if not n:
        return [], [], np.array([], dtype="int64")
    keys = view.join_keys
    dtype, others = _layout(view)
    key_cols = [windows.col(partials, k) for k in keys]
    change = np.zeros(n - 1, dtype=bool)
    for c in key_cols:
        change |= c[1:] != c[:-1]
    starts = np.r_[0, np.flatnonzero(change) + 1]
    ends = np.r_[starts[1:], n]
    eids = entity_ids([c[starts] for c in key_cols])
    if len(set(eids)) != len(eids):
        raise ValueError("partials must be grouped by entity")
    rec = np.empty(n, dtype=dtype)
    big: list[str] = []
    for name in dtype.names:
        v = windows.col(partials, name)
        if v.dtype == object and name.startswith("_sum_"):
            if all(-2**63 <= int(x) < 2**63 for x in v):
                v = v.astype("int64")
            else:
                big.append(name)
                v = np.zeros(n, dtype="int64")
        rec[name] = v
    raw = rec.tobytes()
    size = dtype.itemsize
    # Per row: last values and big sums; a distinct set as its rows' sizes ("<name>#") and
    # their values one after the other.
    extra_cols = {name: [_plain_value(x) for x in windows.col(partials, name)]
                  for name in others if name.startswith("_last_")}
    extra_cols.update({name: [str(int(x)) for x in windows.col(partials, name)] for name in big})
    sets = {name: windows.Sets.of(partials[name]) for name in others if name.startswith("_set_")}
    flat = {name: (s.values.tolist(), s.offsets[starts].tolist(), s.offsets[ends].tolist()) for name, s in sets.items()}
    extra_cols.update({name + "#": s.lens.tolist() for name, s in sets.items()})
    if not extra_cols:
        return eids, _numeric_blobs(np.frombuffer(raw, dtype=np.uint8).reshape(n, size), starts, ends), ends
    head, dumps = _HEAD.pack, orjson.dumps
    blobs = []
    for i, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):
        if extra_cols:
            d = {name: v[a:b] for name, v in extra_cols.items()}
            for name, (values, lo, hi) in flat.items():
                d[name] = values[lo[i]:hi[i]]
            extra = dumps(d)
        else:
            extra = b""
        blobs.append(head(_TAG, b - a, len(extra)) + raw[a * size:b * size] + extra)
    return eids, blobs, ends


def _numeric_blobs(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[bytes]:
    """The blobs of entities without extras: each its head, then its rows' packed records.
    ``rows``: (rows, record size) bytes; entity ``e`` is rows ``[starts[e], ends[e])``. One
    concatenation per entity from views of the rows' buffer: a copy at memory speed (laying
    every byte out with NumPy's fancy indexing cost ~3 ns a byte, 1.7 s a batch once the
    entities held ~90 buckets)."""
    n, size = rows.shape
    m = len(starts)
    heads = np.zeros((m, _HEAD_SIZE), dtype=np.uint8)
    heads[:, 0] = _TAG
    heads[:, 1:5] = (ends - starts).astype("<u4").view(np.uint8).reshape(m, 4)  # then u32 0: no extra
    head_bytes = heads.tobytes()
    body = memoryview(np.ascontiguousarray(rows).reshape(-1))
    h = _HEAD_SIZE
    return [head_bytes[i * h:(i + 1) * h] + body[a:b]
            for i, (a, b) in enumerate(zip((starts * size).tolist(), (ends * size).tolist()))]


def encode_blobs(view: WindowedView, partials: Any) -> dict[str, bytes]:
    """Per entity of ``partials`` (sorted by entity), its partials as one blob."""
    if isinstance(partials, pd.DataFrame):
        partials = {c: partials[c].to_numpy() for c in view.join_keys + ["_k"] + windows.partial_names(view)}
    eids, blobs, _ = encode_columns(view, partials)
    return dict(zip(eids, blobs))


def decode_blobs(view: WindowedView, eids: list[str], blobs: list[bytes | None]) -> pd.DataFrame:
    """The partials of the entities whose blob is not None, as one frame (``encode_blobs``' inverse)."""
    return windows.frame(decode_columns(view, eids, blobs))


def decode_columns(view: WindowedView, eids: list[str], blobs: list[bytes | None]) -> windows.Columns:
    """The partials of the entities whose blob is not None, as ``Columns``: grouped by entity
    in the order of ``eids``, each entity's buckets ascending."""
    return _decode(view, eids, blobs)[0]


def _decode(view: WindowedView, eids: list[str], blobs: list[bytes | None]) -> tuple[windows.Columns, np.ndarray]:
    """``decode_columns``, and how many rows each entity with a blob has."""
    keys = view.join_keys
    dtype, others = _layout(view)
    size = dtype.itemsize
    present = [(e, b) for e, b in zip(eids, blobs) if b is not None]
    ids = [e for e, _ in present]
    raw = [b for _, b in present]
    if (np.frombuffer(b"".join([b[:1] for b in raw]), dtype=np.uint8) != _TAG).any():
        # blobs of the former JSON layout (a state written before), or not a blob at all
        raw = [b if b[:1] == bytes([_TAG]) else _from_json(view, e, b) for e, b in zip(ids, raw)]
    heads = np.frombuffer(b"".join([b[1:_HEAD_SIZE] for b in raw]), dtype="<u4").reshape(-1, 2).astype("int64")
    counts, xlens = heads[:, 0], heads[:, 1]
    ends_b = (_HEAD_SIZE + counts * size).tolist()
    rec = np.frombuffer(b"".join([b[_HEAD_SIZE:e] for b, e in zip(raw, ends_b)]), dtype=dtype)
    extras = [(i, raw[i][ends_b[i]:]) for i in np.flatnonzero(xlens).tolist()]
    out: windows.Columns = {}
    joined = "".join(ids)
    # An id is '["v1","v2"]' (``entity_ids``): without an escaped character, its values are
    # the text between the quotes; else its JSON is parsed.
    decoded = None
    if "\\" in joined:
        decoded = [orjson.loads(e) for e in ids]
    elif len(keys) > 1:
        decoded = [e[2:-2].split('","') for e in ids]
    for i, key in enumerate(keys):
        values = np.empty(len(ids), dtype=object)
        values[:] = [e[2:-2] for e in ids] if decoded is None else [d[i] for d in decoded]
        out[key] = np.repeat(values, counts)
    for name in dtype.names:
        out[name] = rec[name].astype(dtype[name].newbyteorder("="), copy=True)
    if extras or others:
        ends = np.cumsum(counts)
        cols: dict[str, Any] = {}
        set_values: dict[str, list] = {}
        set_lens: dict[str, np.ndarray] = {}
        for name in others:
            if name.startswith("_last_"):
                cols[name] = np.empty(len(rec), dtype=object)
                cols[name][:] = [None] * len(rec)
            else:
                set_values[name] = []
                set_lens[name] = np.zeros(len(rec), dtype="int64")
        ds = orjson.loads(b"[" + b",".join([x for _, x in extras]) + b"]") if extras else []
        names = set(ds[0]) if ds else set()
        if (len(ds) == len(ids) and ds and not any(n.startswith("_sum_") for n in names)
                and all(n in names and n + "#" in names for n in set_values) and all(set(d) == names for d in ds)):
            # The common case, every entity's extra with the same columns: each column is
            # the entities' lists one after the other.
            chain = itertools.chain.from_iterable
            for name in names:
                if name in set_values:
                    set_values[name] = list(chain([d[name] for d in ds]))
                elif name.endswith("#"):
                    set_lens[name[:-1]] = np.fromiter(chain([d[name] for d in ds]), dtype="int64", count=len(rec))
                else:
                    cols[name][:] = list(chain([d[name] for d in ds]))
            extras, ds = [], []
        for (i, _), d in zip(extras, ds):
            a, b = int(ends[i] - counts[i]), int(ends[i])
            for name, v in d.items():
                if name in set_values:
                    set_values[name].extend(v)
                elif name.endswith("#"):
                    set_lens[name[:-1]][a:b] = v
                elif name.startswith("_sum_"):
                    if name not in cols:
                        cols[name] = out[name].astype(object)
                    cols[name][a:b] = [int(x) for x in v]
                else:
                    cols[name][a:b] = v
        for name, values in set_values.items():
            flat = np.empty(len(values), dtype=object)
            flat[:] = values
            cols[name] = windows.Sets(flat, np.r_[0, np.cumsum(set_lens[name])].astype("int64"))
        out.update(cols)
    return {c: out[c] for c in keys + ["_k"] + windows.partial_names(view)}, counts


def _from_json(view: WindowedView, eid: str, blob: bytes) -> bytes:
    """A blob of the former layout (JSON columns) in this one."""
    if blob[:1] != b"{":
        raise ValueError(f"the stream's state for {view.name} {eid} is not a blob this version reads")
    d = orjson.loads(blob)
    n = len(d["_k"])
    cols: windows.Columns = {}
    for key, value in zip(view.join_keys, orjson.loads(eid)):
        cols[key] = np.array([value] * n, dtype=object)
    for name in ["_k"] + windows.partial_names(view):
        v = d[name]
        if name.startswith("_sum_"):
            cols[name] = np.array([int(x) for x in v], dtype=object)
        elif name in ("_k", "_n", "_last_ts"):
            cols[name] = np.array(v, dtype="int64")
        elif name.startswith(("_min_", "_max_")):
            cols[name] = np.array([np.nan if x is None else x for x in v], dtype="float64")
        else:
            cols[name] = np.empty(n, dtype=object)
            cols[name][:] = [tuple(x) for x in v] if name.startswith("_set_") else v
    _, blobs, _ = encode_columns(view, cols)
    return blobs[0]
