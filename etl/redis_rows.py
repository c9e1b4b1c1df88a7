"""Feast's Redis online rows, built column-wise: the same bytes as Feast's writer, at a
fraction of its per-row cost.

Feast's ``provider.ingest_df`` turns a frame into Arrow, every value into a protobuf
``Value`` object, every row into an ``EntityKey`` object, then per row hashes each field
name (``mmh3``), serializes each message and queues an ``HSET`` (0.2-0.3 ms a row). The
layout it writes (feast/infra/online_stores/redis.py, ``online_write_batch`` with
``skip_dedup``; key_encoding_utils ``serialize_entity_key`` version 3; helpers ``_mmh3``)
is, per row::

    key    = u32 n_keys, per join key sorted by name: u32 STRING(2), u32 len, name,
             per value in that order: u32 type, u32 len, bytes   (all little-endian)
             + project (utf-8)
    fields = "_ts:<view>" -> google.protobuf.Timestamp bytes (seconds, nanos; a zero
             field is omitted), then per feature in the view's order
             _mmh3("<view>:<feature>") -> feast Value bytes (empty for a null / NaN)

This module builds those bytes with NumPy for a whole column at once (a Value of a double
is one tag byte and 8 bytes, of an int64 a tag and a varint, a Timestamp two varints) and
the Redis commands as one RESP buffer sent in one round trip. It follows Feast's Arrow
conversion value for value (``_convert_arrow_fv_to_proto``, ``python_values_to_proto_values``):
the frame goes through ``pa.Table.from_pandas`` as in Feast, an int64 column with nulls
becomes float64 there and its values are ``int(x)`` of those floats, NaN is null, a
timestamp loses its nanoseconds below the microsecond. Whatever it does not cover —
another online store, ``skip_dedup`` off, key serialization other than 3, a field
mapping, a dtype other than int64/double/string, an Arrow type it does not expect, a null
join key or timestamp, a value Feast would refuse — is answered ``None`` and the caller
uses Feast's own writer, which then does (or refuses) exactly what it always did.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pandas as pd

_STRING, _INT64 = 2, 4  # feast ValueType numbers used in entity keys
# Value.proto field tags (field number << 3 | wire type)
_TAG_STRING = 0x12  # string_val = 2, length-delimited
_TAG_INT64 = 0x20  # int64_val = 4, varint
_TAG_DOUBLE = 0x29  # double_val = 5, fixed64
_TS_SECONDS, _TS_NANOS = 0x08, 0x10  # Timestamp.seconds = 1, nanos = 2 (varints)
_SHIFTS = np.arange(10, dtype=np.uint64) * np.uint64(7)
_I64_LIMIT = 2.0 ** 63


class Unsupported(Exception):
    """This frame (or view) is not one the fast path reproduces byte for byte."""


Part = tuple  # (bytes matrix (n, w) uint8, mask (n, w) bool): per row, the bytes under its mask, in order
_MAX_WIDTH = 4096  # a longer string value or key: Feast's writer (a matrix that wide would be large)


def _varints(u: np.ndarray, tag: int, present: np.ndarray) -> Part:
    """Tag + base-128 varint of each uint64 in ``u`` (none for a row not ``present``)."""
    n = len(u)
    groups = ((u[:, None] >> _SHIFTS[None, :]) & np.uint64(0x7F)).astype(np.uint8)
    nbytes = 1 + np.count_nonzero((u[:, None] >> _SHIFTS[None, 1:]) != 0, axis=1)
    cols = np.arange(10)[None, :]
    groups |= np.where(cols < (nbytes[:, None] - 1), np.uint8(0x80), np.uint8(0))
    m = np.empty((n, 11), dtype=np.uint8)
    m[:, 0] = tag
    m[:, 1:] = groups
    mask = np.zeros((n, 11), dtype=bool)
    mask[:, 0] = True
    mask[:, 1:] = cols < nbytes[:, None]
    mask &= present[:, None]
    return m, mask


def _fixed64(values: np.ndarray, tag: int, present: np.ndarray) -> Part:
    n = len(values)
    m = np.empty((n, 9), dtype=np.uint8)
    m[:, 0] = tag
    m[:, 1:] = np.ascontiguousarray(values, dtype="<f8").view(np.uint8).reshape(n, 8)
    return m, np.repeat(present[:, None], 9, axis=1)


def _ragged(items, lens: np.ndarray | None = None) -> Part:
    """Byte strings of any lengths (a list, or an object array) as a matrix padded to the longest."""
    n = len(items)
    if lens is None:
        lens = np.fromiter(map(len, items), dtype=np.int64, count=n)
    w = int(lens.max()) if n else 0
    if w > _MAX_WIDTH:
        raise Unsupported(f"a value of {w} bytes")
    if w == 0:
        return np.zeros((n, 0), dtype=np.uint8), np.zeros((n, 0), dtype=bool)
    m = np.asarray(items, dtype=object).astype(f"S{w}").view(np.uint8).reshape(n, w)  # raw: nothing stripped
    return m, np.arange(w)[None, :] < lens[:, None]


def _const(b: bytes, n: int) -> Part:
    row = np.frombuffer(b, dtype=np.uint8)
    return np.broadcast_to(row, (n, len(row))), np.ones((n, len(row)), dtype=bool)


def _join(parts: list) -> Part:
    return np.hstack([p[0] for p in parts]), np.hstack([p[1] for p in parts])


def _join_rows(parts: list) -> Part:
    """``_join`` for many narrow parts: stacked by byte position (rows of n, contiguous
    copies), then turned back to one row per frame row."""
    n = len(parts[0][0])
    width = sum(p[0].shape[1] for p in parts)
    m = np.empty((width, n), dtype=np.uint8)
    mask = np.empty((width, n), dtype=bool)
    at = 0
    for pm, pmask in parts:
        w = pm.shape[1]
        m[at:at + w] = pm.T
        mask[at:at + w] = pmask.T
        at += w
    return np.ascontiguousarray(m.T), np.ascontiguousarray(mask.T)


def _bulk(part: Part) -> list:
    """RESP bulk string of each row's bytes: ``$<len>\\r\\n<bytes>\\r\\n``."""
    m, mask = part
    n = len(m)
    length = mask.sum(axis=1)
    ndig = 1 + (length >= 10) + (length >= 100) + (length >= 1000)  # lengths < 10,000 (_MAX_WIDTH)
    pos = np.arange(4)[None, :]
    power = 10 ** np.clip(ndig[:, None] - 1 - pos, 0, None)
    digits = (ord("0") + (length[:, None] // power) % 10).astype(np.uint8)
    crlf = _const(b"\r\n", n)
    return [_const(b"$", n), (digits, pos < ndig[:, None]), crlf, part, crlf]


def _rows_of(part: Part) -> list[bytes]:
    """Per row, its bytes."""
    m, mask = part
    buf = m[mask].tobytes()
    ends = np.cumsum(mask.sum(axis=1)).tolist()
    return [buf[s:e] for s, e in zip([0] + ends[:-1], ends)]


def _int64_values(arr: np.ndarray) -> Part:
    """Feast's ``Value(int64_val=int(x))`` bytes per value; none for null (NaN)."""
    if arr.dtype.kind in "iu":
        if arr.dtype == np.uint64 and len(arr) and arr.max() >= 2 ** 63:
            raise Unsupported("uint64 beyond int64")
        ints = arr.astype(np.int64)
        present = np.ones(len(arr), dtype=bool)
    elif arr.dtype == np.float64:
        present = ~np.isnan(arr)
        finite = arr[present]
        if np.any((finite >= _I64_LIMIT) | (finite < -_I64_LIMIT)):  # inf, or out of int64: Feast raises
            raise Unsupported("int64 out of range")
        ints = np.trunc(np.where(present, arr, 0.0)).astype(np.int64)
    else:
        raise Unsupported(f"int64 feature from {arr.dtype}")
    return _varints(ints.view(np.uint64), _TAG_INT64, present)


def _double_values(arr: np.ndarray) -> Part:
    if arr.dtype != np.float64:
        raise Unsupported(f"double feature from {arr.dtype}")
    return _fixed64(arr, _TAG_DOUBLE, ~np.isnan(arr))


def _varint_py(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _string_values(arr: np.ndarray) -> Part:
    if arr.dtype != object:
        raise Unsupported(f"string feature from {arr.dtype}")
    out: list[bytes] = []
    heads = [bytes([_TAG_STRING, n]) for n in range(128)]
    for v in arr.tolist():
        if v is None:
            out.append(b"")
        elif type(v) is str:
            e = v.encode("utf-8")
            n = len(e)
            out.append((heads[n] if n < 128 else bytes([_TAG_STRING]) + _varint_py(n)) + e)
        elif isinstance(v, float) and v != v:
            out.append(b"")
        else:
            raise Unsupported(f"string feature holding {type(v).__name__}")
    return _ragged(out)


def _timestamps(arr: np.ndarray) -> Part:
    """Feast's ``Timestamp.FromDatetime(to_pydatetime(t))`` bytes: microseconds, floored."""
    if arr.dtype.kind != "M":
        raise Unsupported(f"event timestamp from {arr.dtype}")
    if np.isnat(arr).any():
        raise Unsupported("null event timestamp")
    if arr.dtype == np.dtype("datetime64[ns]"):
        us = np.floor_divide(arr.astype(np.int64), 1000)
    else:
        us = arr.astype("datetime64[us]").astype(np.int64)  # s, ms, us: exact
    seconds = np.floor_divide(us, 1_000_000)
    nanos = (us - seconds * 1_000_000) * 1000
    return _join([_varints(seconds.view(np.uint64), _TS_SECONDS, seconds != 0),
                  _varints(nanos.astype(np.uint64), _TS_NANOS, nanos != 0)])


def _key_values(col, value_type: int) -> list:
    """Parts of one entity value per row as serialize_entity_key writes it: u32 type,
    u32 len, bytes (a string's utf-8, an int64's 8 bytes little-endian)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(col)
    if value_type == _STRING:
        if col.null_count or not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise Unsupported(f"string join key from {col.type} with {col.null_count} nulls")  # Feast: str(x), or refuses
        lens = pc.binary_length(col).to_numpy().astype(np.int64)
        utf8 = col.cast(pa.large_binary() if pa.types.is_large_string(col.type) else pa.binary())
        value = _ragged(utf8.to_numpy(zero_copy_only=False), lens)
        size = lens.astype("<u4").view(np.uint8).reshape(n, 4)
        return [_const(struct.pack("<I", _STRING), n), (size, np.ones((n, 4), dtype=bool)), value]
    if value_type == _INT64:
        if col.null_count or not pa.types.is_integer(col.type) or pa.types.is_uint64(col.type):
            raise Unsupported(f"int64 join key from {col.type}")
        v = col.to_numpy(zero_copy_only=False).astype("<i8").view(np.uint8).reshape(n, 8)
        return [_const(struct.pack("<II", _INT64, 8), n), (v, np.ones((n, 8), dtype=bool))]
    raise Unsupported(f"join key type {value_type}")


def _key_values_np(arr: np.ndarray, value_type: int) -> list:
    """``_key_values`` of a NumPy column: str values for a string key (what Arrow makes a
    string column of), int64 for an int64 key; anything else is :class:`Unsupported`."""
    n = len(arr)
    if value_type == _STRING:
        if arr.dtype != object:
            raise Unsupported(f"string join key from {arr.dtype}")
        try:  # str (and its subclasses: Arrow's strings) encode; anything else has no encode(...)
            utf8 = [v.encode("utf-8") for v in arr.tolist()]
        except (AttributeError, TypeError, UnicodeEncodeError) as exc:
            raise Unsupported("string join key holding something else") from exc
        lens = np.fromiter(map(len, utf8), dtype=np.int64, count=n)
        size = lens.astype("<u4").view(np.uint8).reshape(n, 4)
        return [_const(struct.pack("<I", _STRING), n), (size, np.ones((n, 4), dtype=bool)), _ragged(utf8, lens)]
    if value_type == _INT64:
        if arr.dtype.kind != "i":
            raise Unsupported(f"int64 join key from {arr.dtype}")
        v = arr.astype("<i8").view(np.uint8).reshape(n, 8)
        return [_const(struct.pack("<II", _INT64, 8), n), (v, np.ones((n, 8), dtype=bool))]
    raise Unsupported(f"join key type {value_type}")


def _resp_bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


class ViewEncoder:
    """One view's Redis rows (Feast's layout) from frames of join keys, ``event_timestamp``
    column (the view's timestamp field) and features. Built by :meth:`for_view`, which
    answers ``None`` when the view or the store is outside what it reproduces."""

    def __init__(self, *, project: str, view_name: str, join_keys: list[tuple[str, int]], features: list[tuple[str, str]],
                 timestamp_field: str, ttl: int | None, script: bool = True):
        from feast.infra.online_stores.helpers import _mmh3

        self.project = project.encode("utf-8")
        self.timestamp_field = timestamp_field
        self.ttl = ttl
        # serialize_entity_key sorts (name, value) pairs by name; names are distinct
        self.join_keys = sorted(join_keys)
        names = [k.encode("utf-8") for k, _ in self.join_keys]
        self.key_head = struct.pack("<I", len(names)) + b"".join(struct.pack("<II", _STRING, len(k)) + k for k in names)
        self.features = features  # (name, "int64" | "double" | "string"), the view's order
        self.ts_field = f"_ts:{view_name}".encode("utf-8")
        self.fields = [_mmh3(f"{view_name}:{name}") for name, _ in features]
        nargs = 2 + 2 * (1 + len(features))
        self._cmd_head = b"*%d\r\n$4\r\nHSET\r\n" % nargs
        self._field_heads = [_resp_bulk(f)[:-2] for f in [self.ts_field, *self.fields]]  # "$n\r\n<field>"
        self._expire = None if not ttl else b"$%d\r\n%d\r\n" % (len(str(ttl)), ttl)
        self.script = script  # the HSETs in EVALs of many rows (``_script_commands``), else one command a row

    @classmethod
    def for_view(cls, feature_view: Any, config: Any) -> "ViewEncoder | None":
        from feast import FeatureView
        from feast.infra.online_stores.helpers import compute_versioned_name
        from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType
        from feast.value_type import ValueType

        store = config.online_store
        if not isinstance(store, RedisOnlineStoreConfig) or not store.skip_dedup:
            return None
        if store.redis_type != RedisType.redis or config.entity_key_serialization_version != 3:
            return None
        if type(feature_view) is not FeatureView or feature_view.batch_source is None:
            return None
        if feature_view.batch_source.field_mapping:
            return None
        kinds = {ValueType.INT64: "int64", ValueType.DOUBLE: "double", ValueType.STRING: "string"}
        features = []
        for f in feature_view.features:
            kind = kinds.get(f.dtype.to_value_type())
            if kind is None:
                return None
            features.append((f.name, kind))
        key_types = {ValueType.STRING: _STRING, ValueType.INT64: _INT64}
        join_keys = []
        for e in feature_view.entity_columns:
            t = key_types.get(e.dtype.to_value_type())
            if t is None:
                return None
            join_keys.append((e.name, t))
        if not join_keys or len({k for k, _ in join_keys}) != len(join_keys):
            return None
        name = compute_versioned_name(feature_view, config.registry.enable_online_feature_view_versioning)
        return cls(project=config.project, view_name=name, join_keys=join_keys, features=features,
                   timestamp_field=feature_view.batch_source.timestamp_field, ttl=store.key_ttl_seconds)

    def parts(self, df: pd.DataFrame) -> tuple[Part, Part, list[Part]]:
        """(Redis keys, timestamp values, per feature its values) of every row, in order.
        Raises :class:`Unsupported` for a frame Feast's conversion would treat otherwise."""
        import pyarrow as pa

        table = pa.Table.from_pandas(df)  # as Feast's ingest_df: the same Arrow types
        batch = table.to_batches()[0] if table.num_rows else None
        if batch is None or batch.num_rows != len(df):
            raise Unsupported("frame not in one Arrow batch")

        def column(name: str) -> np.ndarray:
            if name not in batch.schema.names:
                raise Unsupported(f"column {name} missing")  # Feast raises its own error
            return batch.column(name).to_numpy(zero_copy_only=False)

        n = batch.num_rows
        key = [_const(self.key_head, n)]
        for k, t in self.join_keys:
            if k not in batch.schema.names:
                raise Unsupported(f"column {k} missing")
            key += _key_values(batch.column(k), t)
        keys = _join([*key, _const(self.project, n)])
        ts = _timestamps(column(self.timestamp_field))
        encode = {"int64": _int64_values, "double": _double_values, "string": _string_values}
        return keys, ts, [encode[kind](column(name)) for name, kind in self.features]

    def parts_columns(self, cols: dict) -> tuple[Part, Part, list[Part]]:
        """``parts`` of rows given as NumPy columns (name -> array; the timestamp field as
        datetime64), without the Arrow conversion: what ``parts`` gives for the frame of
        these columns, for the dtypes the stream's rows have (string keys, int64 and
        float64 features, object strings); anything else is :class:`Unsupported` (the
        caller then goes through the frame)."""
        if self.timestamp_field not in cols:
            raise Unsupported(f"column {self.timestamp_field} missing")
        n = len(cols[self.timestamp_field])
        key = [_const(self.key_head, n)]
        for k, t in self.join_keys:
            if k not in cols:
                raise Unsupported(f"column {k} missing")
            key += _key_values_np(np.asarray(cols[k]), t)
        keys = _join([*key, _const(self.project, n)])
        ts = _timestamps(np.asarray(cols[self.timestamp_field]))
        encode = {"int64": _int64_values, "double": _double_values, "string": _string_values}
        values = []
        for name, kind in self.features:
            if name not in cols:
                raise Unsupported(f"column {name} missing")
            arr = np.asarray(cols[name])
            if kind == "string" and arr.dtype == object and any(v is not None and type(v) is not str for v in arr.tolist()):
                raise Unsupported("a string feature holding something else")
            values.append(encode[kind](arr))
        return keys, ts, values

    def rows(self, df: pd.DataFrame) -> tuple[list[bytes], list[bytes], list[list[bytes]]]:
        """Per row: its key, its timestamp field's bytes, each feature field's bytes."""
        keys, ts, values = self.parts(df)
        return _rows_of(keys), _rows_of(ts), [_rows_of(v) for v in values]

    def commands(self, df: pd.DataFrame) -> tuple[bytes, int]:
        """The RESP bytes of one ``HSET key _ts <ts> f1 v1 ...`` per row (then ``EXPIRE key
        ttl`` with a key TTL), built for all rows at once, and how many replies they produce."""
        return self._commands(*self.parts(df))

    def commands_columns(self, cols: dict) -> tuple[bytes, int]:
        """``commands`` of rows given as NumPy columns (``parts_columns``)."""
        return self._commands(*self.parts_columns(cols))

    def _commands(self, keys: Part, ts: Part, values: list[Part]) -> tuple[bytes, int]:
        if self.script:
            return self._script_commands(keys, ts, values)
        n = len(keys[0])
        key = _bulk(keys)
        pieces = [_const(self._cmd_head, n), *key]
        for head, part in zip(self._field_heads, [ts, *values]):
            pieces += [_const(head + b"\r\n", n), *_bulk(part)]
        if self._expire:
            pieces += [_const(b"*3\r\n$6\r\nEXPIRE\r\n", n), *key, _const(self._expire, n)]
        m, mask = _join_rows(pieces)
        return m[mask].tobytes(), n * (2 if self._expire else 1)

    def _script_commands(self, keys: Part, ts: Part, values: list[Part]) -> tuple[bytes, int]:
        """The same ``HSET``s (and ``EXPIRE``s) run by one ``EVAL`` per ``SCRIPT_ROWS`` rows:
        one reply to read instead of one per row (redis-py's reading of a reply costs the
        client more than the server's ``HSET``). The keys are the script's KEYS, the field
        names its ARGV once, then each row's values."""
        n = len(keys[0])
        m = 1 + len(self.fields)
        key_rows = _rows_matrix(_bulk(keys))
        value_rows = _rows_matrix([p for part in [ts, *values] for p in _bulk(part)])
        fields = b"".join(_resp_bulk(f) for f in [self.ts_field, *self.fields])
        out = []
        for a in range(0, n, SCRIPT_ROWS):
            b = min(n, a + SCRIPT_ROWS)
            out += [b"*%d\r\n$4\r\nEVAL\r\n" % (3 + (b - a) + 2 + m + (b - a) * m), _HSET_ALL_RESP,
                    _resp_bulk(b"%d" % (b - a)), _slice_rows(key_rows, a, b),
                    _resp_bulk(b"%d" % m), _resp_bulk(b"%d" % (self.ttl or 0)), fields, _slice_rows(value_rows, a, b)]
        return b"".join(out), len(range(0, n, SCRIPT_ROWS))


SCRIPT_ROWS = 10_000
# HSET KEYS[i] field_1 value_1 ... (fields: ARGV[3 .. 2+m], row i's values after them), then
# EXPIRE KEYS[i] ttl when ttl > 0.
_HSET_ALL = b"""local m = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local args = {}
for i = 1, #KEYS do
  local base = 2 + m + (i - 1) * m
  for j = 1, m do
    args[2 * j - 1] = ARGV[2 + j]
    args[2 * j] = ARGV[base + j]
  end
  redis.call('HSET', KEYS[i], unpack(args))
  if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
end
return #KEYS"""
_HSET_ALL_RESP = _resp_bulk(_HSET_ALL)


def _rows_matrix(parts: list) -> tuple[bytes, np.ndarray]:
    """Rows of byte parts as one buffer and each row's end offset in it."""
    m, mask = _join_rows(parts)
    return m[mask].tobytes(), np.cumsum(mask.sum(axis=1))


def _slice_rows(rows: tuple[bytes, np.ndarray], a: int, b: int) -> bytes:
    buf, ends = rows
    start = int(ends[a - 1]) if a else 0
    return buf[start:int(ends[b - 1])]
