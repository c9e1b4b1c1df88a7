"""The semantics of a windowed view, written once: events -> per-hop partial aggregates ->
the view's rows. NumPy and pandas, no I/O and no Spark, so the batch job (Spark runs it
per entity group, ``etl.transforms``) and the streaming job (on each micro-batch's
entities, merged with their stored partials, ``etl.stream``) run the very same code.

The contract is ``skewless.features.dsl``: at ``t`` a window ``w`` covers the entity's
events in ``[b - w, b)``, ``b`` = t's hop boundary. Everything is in hop units: an event
at ``τ`` is in bucket ``k = floor(τ / h)``; boundary ``b`` sees bucket ``k`` in a window
of ``W`` hops iff ``b - W <= k < b``. A bucket enters every window at ``b = k + 1`` and
leaves window ``W`` at ``b = k + W + 1``: those boundaries are the view's change points,
its rows.

**Partials** (one row per entity and bucket ``_k``) are a monoid — ``merge_partials`` of
partials equals the partials of the union of their events:

* ``_n`` count, ``_last_ts`` latest event time (unix µs);
* ``_sum_<c>`` exact sum as an integer of 1e-9 units (a Python int: no overflow, no
  rounding; a value is first rounded half-up to 9 decimals, as the decimal cast did);
* ``_min_<c>`` / ``_max_<c>`` (float64, nulls ignored);
* ``_last_<c>``: the value of the bucket's latest event (at equal times the greatest);
* ``_set_<feature>``: the distinct non-null values of a distinct-count's column.

**Rows** at a boundary ``b`` read the buckets in ``[b - W, b)`` of their entity: counts and
sums as differences of prefix sums (exact integers), min/max from a sparse table (range
minimum in O(1)), distinct counts from +1/-1 at the ends of each value's presence
interval, last value and last time from the latest bucket before ``b`` if it is inside
the window. Every entity of a frame is done at once (vectorized), so the cost is
O(partials + rows), with a log factor for min/max.
"""

from __future__ import annotations

import decimal
import functools
from typing import Any, Iterable

import numpy as np
import pandas as pd

from skewless.features.dsl import Aggregation, WindowedView, parse_duration

TS = "event_timestamp"
SCALE = 10**9  # sums are exact in units of 1e-9
_CTX = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_UP)


@functools.lru_cache(maxsize=256)
def _duration_us(text: str) -> int:
    return int(parse_duration(text).total_seconds() * 1_000_000)


def hop_us(view: WindowedView) -> int:
    return _duration_us(view.hop)


def hops(view: WindowedView, a: Aggregation) -> int:
    return _duration_us(a.window) // hop_us(view)


def micros(values: Any) -> np.ndarray:
    """Times (datetime-like, any unit, naive = UTC) -> int64 unix microseconds."""
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    if pd.api.types.is_integer_dtype(s.dtype):
        return s.to_numpy(dtype="int64")
    if isinstance(s.dtype, pd.DatetimeTZDtype):  # already times: no parsing
        return s.astype("datetime64[us, UTC]").astype("int64").to_numpy()
    if s.dtype.kind == "M":
        return s.astype("datetime64[us]").astype("int64").to_numpy()
    t = pd.to_datetime(s, utc=True)
    return (t.astype("datetime64[us, UTC]").astype("int64")).to_numpy()


def _scaled(x: float) -> int:
    """A float as an exact integer of 1e-9 units, rounded half-up like ``cast(decimal(38,9))``."""
    return int(_CTX.create_decimal(repr(float(x))).scaleb(9, _CTX).to_integral_value(rounding=decimal.ROUND_HALF_UP))


def _columns(view: WindowedView) -> dict[str, set[str]]:
    kinds: dict[str, set[str]] = {"sum": set(), "min": set(), "max": set(), "last": set()}
    for a in view.aggregations:
        if a.function in ("sum", "mean"):
            kinds["sum"].add(a.column)
        elif a.function in ("min", "max", "last"):
            kinds[a.function].add(a.column)
    return kinds


def partial_names(view: WindowedView) -> list[str]:
    """The partial columns of a view (after its join keys and ``_k``)."""
    kinds = _columns(view)
    return (["_n", "_last_ts"] + [f"_sum_{c}" for c in sorted(kinds["sum"])]
            + [f"_min_{c}" for c in sorted(kinds["min"])] + [f"_max_{c}" for c in sorted(kinds["max"])]
            + [f"_last_{c}" for c in sorted(kinds["last"])]
            + [f"_set_{a.feature_name}" for a in view.aggregations if a.function == "distinct_count"])


Columns = dict  # column name -> 1-D NumPy array: a frame without pandas' per-call cost


class Sets:
    """A column of distinct sets, flat: row ``i`` holds ``values[offsets[i]:offsets[i + 1]]``
    (sorted, distinct). What ``Columns`` hold for a ``_set_`` partial (a DataFrame holds a
    tuple per row: ``frame``): no Python object per row."""

    __slots__ = ("values", "offsets")

    def __init__(self, values: np.ndarray, offsets: np.ndarray):
        self.values, self.offsets = values, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lens(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def of(cls, column: Any) -> "Sets":
        """A ``Sets`` column, or one from a column of tuples."""
        if isinstance(column, Sets):
            return column
        lens = np.fromiter((len(s) for s in column), dtype="int64", count=len(column))
        values = np.empty(int(lens.sum()), dtype=object)
        values[:] = [x for s in column for x in s]
        return cls(values, np.r_[0, np.cumsum(lens)].astype("int64"))

    def tuples(self) -> np.ndarray:
        out = np.empty(len(self), dtype=object)
        vals, off = self.values.tolist(), self.offsets.tolist()
        out[:] = [tuple(vals[a:b]) for a, b in zip(off[:-1], off[1:])]
        return out

    def __getitem__(self, idx: Any) -> "Sets":
        rows = np.arange(len(self))[idx]
        lens = self.lens[rows]
        offsets = np.r_[0, np.cumsum(lens)].astype("int64")
        flat = np.repeat(self.offsets[:-1][rows] - offsets[:-1], lens) + np.arange(offsets[-1])
        return Sets(self.values[flat], offsets)

    @staticmethod
    def concat(parts: list["Sets"]) -> "Sets":
        shift = np.cumsum([0] + [p.offsets[-1] for p in parts[:-1]])
        return Sets(np.concatenate([p.values for p in parts]),
                    np.r_[0, np.concatenate([p.offsets[1:] + s for p, s in zip(parts, shift)])].astype("int64"))


def frame(cols: Columns) -> pd.DataFrame:
    """``Columns`` as a DataFrame (sets as a tuple per row)."""
    return pd.DataFrame({k: v.tuples() if isinstance(v, Sets) else v for k, v in cols.items()})


def col(frame: Any, name: str) -> np.ndarray:
    """A column of a DataFrame or of a ``Columns`` dict, as a NumPy array."""
    v = frame[name]
    return v if isinstance(v, np.ndarray) else v.to_numpy()


def nrows(frame: Any) -> int:
    if isinstance(frame, pd.DataFrame):
        return len(frame)
    return len(next(iter(frame.values()))) if frame else 0


def take(frame: Columns, idx: Any) -> Columns:
    """Rows ``idx`` (indices or a mask) of every column."""
    return {k: v[idx] for k, v in frame.items()}


def concat(frames: list[Columns]) -> Columns:
    frames = [f for f in frames if nrows(f)]
    if len(frames) == 1:
        return frames[0]
    return {k: Sets.concat([Sets.of(f[k]) for f in frames]) if isinstance(frames[0][k], Sets)
            else np.concatenate([f[k] for f in frames]) for k in frames[0]}


def scaled_values(values: Any) -> np.ndarray:
    """Floats (NaN/None = null) as exact integers of 1e-9 units, rounded half-up like
    ``cast(decimal(38,9))``; a null is 0 (it adds nothing to a sum). int64 when every value
    is small enough that the float arithmetic is exact (|x| < 1e6 and ``x`` is the float
    nearest to ``N * 1e-9``: then ``N`` is the one multiple of 1e-9 that rounds to ``x``, so
    its shortest repr, rounded to 9 decimals, is ``N``); the others go through the decimal
    rounding one by one, and a column holding one too large for int64 is Python ints."""
    x = _floats(np.asarray(values))
    null = np.isnan(x)
    xz = np.where(null, 0.0, x)
    n = np.round(xz * 1e9)
    fast = (np.abs(xz) < 1e6) & (n / 1e9 == xz)
    if fast.all():
        return n.astype("int64")
    slow = np.flatnonzero(~fast)
    exact = [_scaled(x[i]) if not null[i] else 0 for i in slow.tolist()]
    out = np.where(fast, n, 0).astype("int64")
    if all(-2**62 < v < 2**62 for v in exact):
        out[slow] = exact
        return out
    out = out.astype(object)
    out[slow] = exact
    return out


def _safe_sums(values: np.ndarray) -> np.ndarray:
    """int64 sums whose totals cannot leave int64 stay int64; else Python ints (exact)."""
    if values.dtype == object or not len(values):
        return values
    if float(np.abs(values).sum(dtype="float64")) < 2.0**62:
        return values
    return values.astype(object)


def _codes(values: np.ndarray) -> np.ndarray:
    """Sort-order codes of values (nulls last, one code: as ``groupby(dropna=False)``)."""
    codes, _ = pd.factorize(values, sort=True, use_na_sentinel=False)
    return codes.astype("int64", copy=False)


def _grouped(key_arrays: list[np.ndarray], k: np.ndarray, *minor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The order sorting rows by (keys..., k, minor...) and the first sorted row of each
    (keys, k) group."""
    codes = [_codes(a) for a in key_arrays]
    order = np.lexsort((*reversed(minor), k, *reversed(codes)))
    if not len(order):
        return order, order
    ks = k[order]
    change = ks[1:] != ks[:-1]
    for c in codes:
        cs = c[order]
        change |= cs[1:] != cs[:-1]
    return order, np.r_[0, np.flatnonzero(change) + 1]


def _value_codes(values: np.ndarray) -> np.ndarray:
    """Codes ordering values ascending with nulls least (-1)."""
    codes, _ = pd.factorize(values, sort=True)
    return codes.astype("int64", copy=False)


def _latest(values: np.ndarray, times: np.ndarray, key_arrays: list[np.ndarray], k: np.ndarray,
            starts: np.ndarray) -> np.ndarray:
    """Per (keys, k) group (in sorted order): the value at the latest time; at equal times
    the greatest (nulls least)."""
    order, starts2 = _grouped(key_arrays, k, times, _value_codes(values))
    ends = np.r_[starts2[1:], len(order)] - 1
    return values[order][ends]


def _distinct(values: np.ndarray, group: np.ndarray, groups: int) -> Sets:
    """Per group number 0..groups-1: the sorted distinct non-null values."""
    present = ~pd.isna(values)
    if not present.any():
        return Sets(np.array([], dtype=object), np.zeros(groups + 1, dtype="int64"))
    vc, uniq = pd.factorize(values[present], sort=True)
    m = len(uniq) + 1
    pairs = np.unique(group[present] * m + vc)
    counts = np.bincount(pairs // m, minlength=groups)
    return Sets(np.asarray(uniq, dtype=object)[pairs % m], np.r_[0, np.cumsum(counts)].astype("int64"))


def bucket_columns(view: WindowedView, events: Any, time_column: str = "_ts") -> Columns:
    """Per (entity, bucket ``_k``), sorted by both: the partials of the events (one event
    per row; a DataFrame or ``Columns``)."""
    keys = view.join_keys
    names = partial_names(view)
    n = nrows(events)
    if not n:
        return {c: np.array([], dtype="int64" if c in ("_k", "_n", "_last_ts") else object)
                for c in keys + ["_k"] + names}
    key_arrays = [col(events, k) for k in keys]
    t = micros(events[time_column])  # a Series of times as it is (its NumPy copy is Timestamp objects)
    k = t // hop_us(view)
    order, starts = _grouped(key_arrays, k)
    out: Columns = {key: a[order][starts] for key, a in zip(keys, key_arrays)}
    out["_k"] = k[order][starts]
    out["_n"] = np.diff(np.r_[starts, n]).astype("int64")
    out["_last_ts"] = np.maximum.reduceat(t[order], starts)
    kinds = _columns(view)
    for c in sorted(kinds["sum"]):
        out[f"_sum_{c}"] = np.add.reduceat(_safe_sums(scaled_values(col(events, c)))[order], starts)
    for c in sorted(kinds["min"]):
        out[f"_min_{c}"] = np.fmin.reduceat(_floats(col(events, c))[order], starts)
    for c in sorted(kinds["max"]):
        out[f"_max_{c}"] = np.fmax.reduceat(_floats(col(events, c))[order], starts)
    for c in sorted(kinds["last"]):
        out[f"_last_{c}"] = _latest(np.asarray(col(events, c), dtype=object), t, key_arrays, k, starts)
    group = np.empty(n, dtype="int64")
    group[order] = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))
    for a in view.aggregations:
        if a.function == "distinct_count":
            out[f"_set_{a.feature_name}"] = _distinct(np.asarray(col(events, a.column), dtype=object), group, len(starts))
    return {c: out[c] for c in keys + ["_k"] + names}


def _floats(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.float64:
        return values
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype="float64")


def bucket_partials(view: WindowedView, events: pd.DataFrame, time_column: str = "_ts") -> pd.DataFrame:
    """Per (entity, bucket ``_k``): the partials of the events (one event per row)."""
    if events.empty:
        return _empty_partials(view, events)
    return frame(bucket_columns(view, events, time_column))


def _isnull(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def merge_columns(view: WindowedView, partials: Columns, entity_codes: np.ndarray | None = None) -> Columns:
    """``merge_partials`` on ``Columns``: one row per (entity, bucket), sorted by both.

    ``entity_codes``: an int64 code per row that orders the entities as their keys sort (the
    stream knows them: its rows come grouped by entity), spares sorting the keys' text. Only
    the (entity, bucket) groups of several rows are reduced; the stream's stored buckets are
    mostly alone, and their sets and last values are then taken as they are."""
    keys = view.join_keys
    names = ["_k"] + partial_names(view)
    n = nrows(partials)
    if not n:
        return partials
    key_arrays = [partials[k] for k in keys]
    k = partials["_k"].astype("int64", copy=False)
    group_keys = key_arrays if entity_codes is None else [entity_codes]
    order, starts = _grouped(group_keys, k)
    out: Columns = {key: a[order][starts] for key, a in zip(keys, key_arrays)}
    if len(starts) == n:  # every (entity, bucket) once: nothing to merge
        out.update({c: Sets.of(partials[c])[order] if c.startswith("_set_") else partials[c][order] for c in names})
        return out
    sizes = np.diff(np.r_[starts, n])
    multi = sizes > 1
    sub = order[np.repeat(multi, sizes)]  # the rows of groups of several rows, in sorted order
    sub_group = np.repeat(np.arange(int(multi.sum()), dtype=np.int64), sizes[multi])
    single_rows = order[starts[~multi]]  # the row of each group of one
    at_single, at_multi = np.flatnonzero(~multi), np.flatnonzero(multi)
    out["_k"] = k[order][starts]
    for name in names[1:]:
        v = partials[name]
        if name == "_n":
            out[name] = np.add.reduceat(v[order], starts)
        elif name == "_last_ts":
            out[name] = np.maximum.reduceat(v[order], starts)
        elif name.startswith("_sum_"):
            out[name] = np.add.reduceat(_safe_sums(v)[order], starts)
        elif name.startswith("_min_"):
            out[name] = np.fmin.reduceat(v.astype("float64")[order], starts)
        elif name.startswith("_max_"):
            out[name] = np.fmax.reduceat(v.astype("float64")[order], starts)
        elif name.startswith("_last_"):
            values = np.asarray(v, dtype=object)
            res = np.empty(len(starts), dtype=object)
            res[at_single] = values[single_rows]
            res[at_multi] = _latest(values[sub], partials["_last_ts"][sub], [a[sub] for a in group_keys], k[sub], None)
            out[name] = res
        elif name.startswith("_set_"):
            sets = Sets.of(v)
            several = sets[sub]
            merged = _distinct(several.values, np.repeat(sub_group, several.lens), len(at_multi))
            pos = np.empty(len(starts), dtype=np.int64)
            pos[at_single] = np.arange(len(at_single))
            pos[at_multi] = len(at_single) + np.arange(len(at_multi))
            out[name] = Sets.concat([sets[single_rows], merged])[pos]
    return {c: out[c] for c in keys + names}


def droppable_buckets(view: WindowedView) -> bool:
    """Can a view's bucket be forgotten before it leaves its windows (``forget_dominated``)?
    Only if every aggregation selects rather than adds: a count or a sum needs every bucket
    (min and max could be dominated too; they are left alone: a view with them keeps its
    buckets)."""
    return all(a.function in ("distinct_count", "last", "last_time") for a in view.aggregations)


def forget_dominated(view: WindowedView, partials: Columns, from_b: int) -> Columns:
    """The partials without what no row at a boundary ``b >= from_b`` reads: those rows
    equal the rows of ``partials`` (``rows_at``), and merging later events into the result
    keeps it so (what is forgotten stays dominated: see below). ``partials``: one row per
    (entity, bucket), grouped by entity, buckets ascending (``merge_columns``' output).

    A bucket ``k < from_b`` is *settled*. A window at ``b >= from_b`` that holds a settled
    bucket ``k`` holds every later settled bucket of its entity too (``b - w <= k < k' <
    from_b <= b``). So a distinct value that occurs again in a later settled bucket is never
    counted through ``k`` alone: it is removed from ``k``'s set. And where the view only
    selects (``droppable_buckets``: distinct counts, last values and times), a settled bucket
    with a later settled one and no value left in its sets is dropped whole: the later one
    is always the latest in any window holding both. The entity's last settled bucket is
    always kept. This is the monotonic-queue idea of a sliding max, on partials: the
    stream's state for an entity then grows with its distinct values, not with its events."""
    n = nrows(partials)
    sets = [c for c in partials if c.startswith("_set_")]
    drop = droppable_buckets(view)
    if n < 2 or not (sets or drop):
        return partials
    gid, _ = _entity_runs(partials, view.join_keys)
    k = partials["_k"]
    settled = k < from_b
    # A later settled bucket of the same entity (buckets ascend, so the next row is one if any is).
    later = np.r_[(gid[1:] == gid[:-1]) & settled[1:], False] & settled
    if not later.any():
        return partials
    out = dict(partials)
    empty = later.copy()
    for name in sets:
        s = Sets.of(partials[name])
        lens = s.lens
        if not lens.sum():
            continue
        row = np.repeat(np.arange(n, dtype=np.int64), lens)
        codes, uniq = pd.factorize(s.values, sort=False, use_na_sentinel=False)
        # (entity, value) as one int64 code, then sorted by it and bucket: rows ascend by
        # bucket within an entity, so a stable sort of the code alone does it
        pair = gid[row] * len(uniq) + codes
        order = np.argsort(pair, kind="stable")
        p_s, set_s = pair[order], settled[row][order]
        # an occurrence is dominated if the next one is the same value of the same entity,
        # in a settled bucket
        dominated = np.zeros(len(order), dtype=bool)
        dominated[:-1] = set_s[:-1] & set_s[1:] & (p_s[1:] == p_s[:-1])
        keep = np.empty(len(order), dtype=bool)
        keep[order] = ~dominated
        if keep.all():
            empty &= lens == 0
            continue
        kept = np.bincount(row[keep], minlength=n)
        out[name] = Sets(s.values[keep], np.r_[0, np.cumsum(kept)].astype("int64"))
        empty &= kept == 0
    if drop and empty.any():
        out = take(out, ~empty)
    return out


def merge_partials(view: WindowedView, partials: pd.DataFrame) -> pd.DataFrame:
    """Partials of the same (entity, bucket) merged into one row: the partials of the union
    of their events (a stream's late event joins its bucket's stored partial here)."""
    if partials.empty:
        return partials
    cols = {c: partials[c].to_numpy() for c in view.join_keys + ["_k"] + partial_names(view)}
    return frame(merge_columns(view, cols))


def _empty_partials(view: WindowedView, like: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=like[c].dtype if c in like else "object")
                         for c in view.join_keys + ["_k"] + partial_names(view)})


def change_points(view: WindowedView, partials: pd.DataFrame) -> np.ndarray:
    """Per partial row, the boundaries where it changes a value (enter, and leave each window)."""
    offsets = sorted({1} | {hops(view, a) + 1 for a in view.aggregations})
    return np.add.outer(col(partials, "_k").astype("int64", copy=False), np.array(offsets, dtype="int64"))


def next_change(view: WindowedView, partials: Any, after_b: int, frame: bool = True) -> Any:
    """Per entity of ``partials`` (grouped by entity, as the stream stores them): the first
    boundary after ``after_b`` where one of its values changes (``_next``, hop units), or
    none when every bucket has left every window. A DataFrame, or ``Columns`` when not ``frame``
    (with ``_entity``: the entity's position among those of ``partials``)."""
    keys = view.join_keys
    if not nrows(partials):
        out = {k: col(partials, k)[:0] for k in keys}
        out["_next"] = np.array([], dtype="int64")
        if not frame:
            out["_entity"] = np.array([], dtype="int64")
        return pd.DataFrame(out) if frame else out
    _gid, starts = _entity_runs(partials, keys)
    cps = change_points(view, partials)
    cps = np.where(cps > after_b, cps, np.iinfo("int64").max).min(axis=1)
    nxt = np.minimum.reduceat(cps, starts)
    keep = nxt < np.iinfo("int64").max
    out = {k: col(partials, k)[starts][keep] for k in keys}
    out["_next"] = nxt[keep]
    if frame:
        return pd.DataFrame(out)
    out["_entity"] = np.flatnonzero(keep)
    return out


def view_rows(view: WindowedView, partials: pd.DataFrame, since_b: int | None = None, until_b: int | None = None,
              probes: pd.DataFrame | None = None) -> pd.DataFrame:
    """The view's rows — (join keys..., ``event_timestamp``, features...) — at every change
    point ``b`` (hop units) of the entities in ``partials`` with ``since_b <= b < until_b``,
    plus the boundaries in ``probes`` (join keys, ``_b``), e.g. "now" for a stream. The
    partials must reach back a longest window before the first row asked for."""
    keys = view.join_keys
    p = partials.sort_values(keys + ["_k"], kind="mergesort").reset_index(drop=True)
    if p.empty:
        return _empty_rows(view, p)
    gid, starts = _entity_runs(p, keys)
    k = p["_k"].to_numpy(dtype="int64")

    # The probes: change points, then asked-for boundaries, distinct, in range.
    cps = change_points(view, p)
    pg = np.repeat(gid, cps.shape[1])
    pb = cps.ravel()
    if probes is not None and not probes.empty:
        first = p.iloc[starts][keys].assign(_g=np.arange(len(starts)))
        extra = probes.merge(first, on=keys, how="inner")
        pg = np.concatenate([pg, extra["_g"].to_numpy(dtype="int64")])
        pb = np.concatenate([pb, extra["_b"].to_numpy(dtype="int64")])
    keep = np.ones(len(pb), dtype=bool)
    if since_b is not None:
        keep &= pb >= since_b
    if until_b is not None:
        keep &= pb < until_b
    pg, pb = pg[keep], pb[keep]
    # A boundary before the entity's first bucket has no row (no history: "not found").
    first_k = k[starts]
    keep = pb > first_k[pg]
    pg, pb = pg[keep], pb[keep]
    if len(pb):
        lo_b, range_b = int(pb.min()), int(pb.max()) - int(pb.min()) + 1
        if range_b * len(starts) < 2**62:  # one int64 code per (entity, boundary): a 1-D unique
            code = np.unique(pg * range_b + (pb - lo_b))
            pg, pb = code // range_b, code % range_b + lo_b
        else:
            pairs = np.unique(np.stack([pg, pb], axis=1), axis=0)
            pg, pb = pairs[:, 0], pairs[:, 1]
    return _rows_at(view, p, gid, starts, k, pg, pb)


def rows_at(view: WindowedView, partials: Any, b: int, frame: bool = True) -> Any:
    """Every entity's row at boundary ``b`` (hop units) — the rows ``view_rows(view, partials,
    since_b=b, until_b=b + 1, probes=<every entity at b>)`` returns, without enumerating the
    change points: what the stream publishes when a boundary passes. ``partials`` must be
    grouped by entity, each entity's buckets in order (as the stream stores them).
    ``Columns`` (``event_timestamp`` as datetime64[us]) when not ``frame``."""
    keys = view.join_keys
    if not nrows(partials):
        rows = _empty_rows(view, partials)
        return rows if frame else {c: rows[c].to_numpy() for c in rows.columns}
    gid, starts = _entity_runs(partials, keys)
    k = col(partials, "_k").astype("int64", copy=False)
    if (np.diff(k)[np.diff(gid) == 0] <= 0).any():
        raise ValueError("partials must be grouped by entity, buckets ascending")
    qg = np.flatnonzero(k[starts] < b)  # an entity with no bucket before b has no row
    return _rows_at(view, partials, gid, starts, k, qg, np.full(len(qg), b, dtype="int64"), frame=frame)


def _entity_runs(p: Any, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """For a frame grouped by entity: each row's entity number (0, 1, ... in order) and the
    first row of each entity. Null keys are one entity (as ``groupby(dropna=False)``)."""
    n = nrows(p)
    change = np.zeros(max(n - 1, 0), dtype=bool)
    for key in keys:
        c = col(p, key)
        ne = c[1:] != c[:-1]
        if c.dtype == object or c.dtype.kind == "f":
            # NaN != NaN: two nulls in a row are no change (only where ``ne`` says one)
            at = np.flatnonzero(ne)
            if len(at):
                ne[at[pd.isna(c[at]) & pd.isna(c[at + 1])]] = False
        change |= ne
    starts = np.r_[0, np.flatnonzero(change) + 1]
    gid = np.zeros(n, dtype="int64")
    gid[starts[1:]] = 1
    return np.cumsum(gid), starts


def _rows_at(view: WindowedView, p: Any, gid: np.ndarray, starts: np.ndarray, k: np.ndarray,
             qg: np.ndarray, qb: np.ndarray, frame: bool = True) -> Any:
    """The rows of entities ``qg`` (their numbers in ``gid``) at boundaries ``qb``: the
    window arithmetic over the partials ``p`` (grouped by entity, buckets ascending)."""
    keys = view.join_keys
    wmax = max(hops(view, a) for a in view.aggregations)
    kmin = int(k.min())
    span = int(k.max()) - kmin + wmax + 3
    comp = gid * span + (k - kmin)
    qcomp_hi = qg * span + np.clip(qb - kmin, 0, span - 1)
    hi = np.searchsorted(comp, qcomp_hi, side="left")  # first bucket >= b: the window ends before it

    out: dict[str, Any] = {}
    for key in keys:
        out[key] = col(p, key)[starts][qg]
    ts_us = qb * hop_us(view)
    out[TS] = pd.to_datetime(ts_us, unit="us", utc=True) if frame else ts_us.astype("datetime64[us]")
    prefix: dict[str, np.ndarray] = {}

    def lo_of(w: int) -> np.ndarray:
        return np.searchsorted(comp, qg * span + np.clip(qb - w - kmin, 0, span - 1), side="left")

    def cum(name: str) -> np.ndarray:
        if name not in prefix:
            vals = col(p, name)
            if name.startswith("_sum_"):
                vals = _safe_sums(vals)  # int64 only where no prefix sum can leave int64
            if vals.dtype == object:
                prefix[name] = np.concatenate([np.array([0], dtype=object), np.cumsum(vals.astype(object))])
            else:
                prefix[name] = np.concatenate([[0], np.cumsum(vals.astype("int64"))])
        return prefix[name]

    for a in view.aggregations:
        w, c = hops(view, a), a.column
        lo = lo_of(w)
        n = cum("_n")[hi] - cum("_n")[lo]
        name = a.feature_name
        if a.function == "count":
            out[name] = n.astype("int64")
        elif a.function in ("sum", "mean"):
            s = cum(f"_sum_{c}")[hi] - cum(f"_sum_{c}")[lo]
            if s.dtype != object and (not len(s) or np.abs(s).max() < 2**53):
                total = s.astype("float64") / SCALE  # exact integers: the same correctly rounded quotient
            else:
                total = np.array([int(x) / SCALE for x in s], dtype="float64")
            out[name] = total if a.function == "sum" else np.where(n > 0, total / np.where(n > 0, n, 1), np.nan)
        elif a.function in ("min", "max"):
            out[name] = _range_reduce(col(p, f"_{a.function}_{c}").astype("float64"), lo, hi,
                                      np.fmin if a.function == "min" else np.fmax)
        elif a.function == "distinct_count":
            out[name] = _distinct_counts(p, gid, k, kmin, span, w, f"_set_{name}", qg, qb)
        elif a.function in ("last_time", "last"):
            inside = hi > lo  # the latest bucket before b is in the window
            j = np.maximum(hi - 1, 0)
            if a.function == "last_time":
                out[name] = np.where(inside, col(p, "_last_ts").astype("int64")[j] / 1e6, np.nan)
            else:
                vals = col(p, f"_last_{c}").astype(object)[j]
                out[name] = np.where(inside, vals, None).astype(object)
        else:
            raise ValueError(f"unknown aggregation {a.function}")
    if not frame:
        return {c: out[c] for c in keys + [TS] + view.features}
    return pd.DataFrame(out)[keys + [TS] + view.features]


def _range_reduce(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, op) -> np.ndarray:
    """op-reduce of ``values[lo:hi]`` per query (NaN for an empty range), by a sparse table."""
    n = len(values)
    table = [values]
    step = 1
    while 2 * step <= n:
        prev = table[-1]
        table.append(op(prev[:-step], prev[step:]))
        step *= 2
    length = hi - lo
    out = np.full(len(lo), np.nan)
    ok = length > 0
    level = np.zeros(len(lo), dtype="int64")
    level[ok] = np.floor(np.log2(length[ok])).astype("int64")
    for lv in np.unique(level[ok]):
        sel = ok & (level == lv)
        t = table[lv]
        out[sel] = op(t[lo[sel]], t[hi[sel] - (1 << lv)])
    return out


def _distinct_counts(p: Any, gid: np.ndarray, k: np.ndarray, kmin: int, span: int, w: int, name: str,
                     qg: np.ndarray, qb: np.ndarray) -> np.ndarray:
    """Distinct values in ``[b - w, b)``: a value is present from the boundary after an
    occurrence until ``w`` hops after the last occurrence closer than ``w`` to the previous."""
    sets = Sets.of(p[name])
    lens = sets.lens
    if lens.sum() == 0:
        return np.zeros(len(qg), dtype="int64")
    og, ok_ = np.repeat(gid, lens), np.repeat(k, lens)
    codes, _ = pd.factorize(sets.values, sort=False)
    order = np.lexsort((ok_, codes, og))
    og, ok_, codes = og[order], ok_[order], codes[order]
    same_prev = np.r_[False, (og[1:] == og[:-1]) & (codes[1:] == codes[:-1])]
    same_next = np.r_[same_prev[1:], False]
    gap_prev = np.r_[0, ok_[1:] - ok_[:-1]]
    gap_next = np.r_[gap_prev[1:], 0]
    starts = ~same_prev | (gap_prev > w)
    ends = ~same_next | (gap_next > w)
    db = np.concatenate([ok_[starts] + 1, ok_[ends] + w + 1])
    dg = np.concatenate([og[starts], og[ends]])
    dv = np.concatenate([np.ones(starts.sum(), "int64"), -np.ones(ends.sum(), "int64")])
    dcomp = dg * span + (db - kmin)
    order = np.argsort(dcomp, kind="mergesort")
    dcomp, csum = dcomp[order], np.cumsum(dv[order])
    # Each entity's deltas sum to 0, so the running sum up to (g, b) is g's count at b.
    idx = np.searchsorted(dcomp, qg * span + np.clip(qb - kmin, 0, span - 1), side="right") - 1
    return np.where(idx >= 0, csum[np.maximum(idx, 0)], 0).astype("int64")


def _empty_rows(view: WindowedView, p: pd.DataFrame) -> pd.DataFrame:
    types = {"int64": "int64", "float64": "float64", "string": object, "bool": object}
    cols = {k: pd.Series([], dtype=object) for k in view.join_keys}
    cols[TS] = pd.Series([], dtype="datetime64[us, UTC]")
    for a in view.aggregations:
        cols[a.feature_name] = pd.Series([], dtype=types[a.output_type])
    return pd.DataFrame(cols)


def events_rows(view: WindowedView, events: pd.DataFrame, since_b: int | None = None,
                until_b: int | None = None) -> pd.DataFrame:
    """Events (``_ts`` time column) -> the view's rows: the batch job's per-group function."""
    return view_rows(view, bucket_partials(view, events), since_b, until_b)


# --- an incremental run's additive path: count-only views


def additive(view: WindowedView) -> bool:
    """Can rows over ``old ∪ new`` events be made from the old rows and the new events'
    rows alone (``add_rows``)? For counts: a window's count over the union is the old
    count plus the new events' count — exact integers, whatever the order."""
    return all(a.function == "count" for a in view.aggregations)


def add_rows(view: WindowedView, old: pd.DataFrame, delta: pd.DataFrame) -> pd.DataFrame:
    """The view's rows over the union of two sets of events with no event in common, from
    the rows of each (an ``additive`` view): ``old`` = the rows of the first set, ``delta``
    = ``events_rows`` of the second, both with every row of their entities from some time
    on (``old`` also with each entity's latest row before that time, if any: the value it
    holds there). The union has a row at every boundary of either (a change point of
    either set is one of the union; a boundary before an entity's first event has no row
    in either), valued as the sum of each side's value there — its latest row at or
    before the boundary, 0 before its first. Returns the rows, sorted by entity and time,
    from each entity's first ``delta`` row or ``old`` row, whichever is earlier (the caller
    drops what it did not ask for)."""
    keys = list(view.join_keys)
    feats = view.features
    if delta.empty:
        return old[keys + [TS] + feats].reset_index(drop=True)
    both = pd.concat([old[keys + [TS] + feats].assign(_src=0), delta[keys + [TS] + feats].assign(_src=1)],
                     ignore_index=True)
    t = micros(both[TS])
    ent = both.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    order = np.lexsort((both["_src"].to_numpy(), t, ent))
    both, t, ent = both.iloc[order].reset_index(drop=True), t[order], ent[order]
    src = both["_src"].to_numpy()
    idx = np.arange(len(both))
    out = both[keys + [TS]].copy()
    for side in (0, 1):
        last = np.maximum.accumulate(np.where(src == side, idx, -1))
        ok = (last >= 0) & (ent[np.maximum(last, 0)] == ent)
        j = np.maximum(last, 0)
        for f in feats:
            v = np.where(ok, both[f].to_numpy(dtype="int64")[j], 0)
            out[f] = v if side == 0 else out[f].to_numpy(dtype="int64") + v
    # One row per (entity, boundary): the last of its copies holds both sides' values.
    last_of = np.r_[(ent[1:] != ent[:-1]) | (t[1:] != t[:-1]), True]
    out = out[last_of].reset_index(drop=True)
    for a in view.aggregations:
        out[a.feature_name] = out[a.feature_name].astype("int64")
    return out[keys + [TS] + feats]
