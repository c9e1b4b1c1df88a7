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
from typing import Any, Iterable

import numpy as np
import pandas as pd

from skewless.features.dsl import Aggregation, WindowedView

TS = "event_timestamp"
SCALE = 10**9  # sums are exact in units of 1e-9
_CTX = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_UP)


def hop_us(view: WindowedView) -> int:
    return int(view.hop_td.total_seconds() * 1_000_000)


def hops(view: WindowedView, a: Aggregation) -> int:
    return int(a.window_td.total_seconds() * 1_000_000) // hop_us(view)


def micros(values: Any) -> np.ndarray:
    """Times (datetime-like, any unit, naive = UTC) -> int64 unix microseconds."""
    s = pd.Series(values)
    if pd.api.types.is_integer_dtype(s.dtype):
        return s.to_numpy(dtype="int64")
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


def bucket_partials(view: WindowedView, events: pd.DataFrame, time_column: str = "_ts") -> pd.DataFrame:
    """Per (entity, bucket ``_k``): the partials of the events (one event per row)."""
    keys = view.join_keys
    if events.empty:
        return _empty_partials(view, events)
    ev = pd.DataFrame({k: events[k].to_numpy() for k in keys})
    ev["_t"] = micros(events[time_column])
    ev["_k"] = ev["_t"] // hop_us(view)
    kinds = _columns(view)
    for c in kinds["sum"]:
        ev[f"_s_{c}"] = np.array([None if pd.isna(x) else _scaled(x) for x in events[c].to_numpy()], dtype=object)
    for c in kinds["min"] | kinds["max"]:
        ev[f"_f_{c}"] = pd.to_numeric(events[c], errors="coerce").astype("float64").to_numpy()
    for c in kinds["last"]:
        ev[f"_v_{c}"] = events[c].to_numpy()
    dc = [a for a in view.aggregations if a.function == "distinct_count"]
    for a in dc:
        ev[f"_d_{a.feature_name}"] = events[a.column].to_numpy()
    g = ev.groupby(keys + ["_k"], sort=True, dropna=False)
    out = g.size().rename("_n").to_frame()
    out["_last_ts"] = g["_t"].max()
    for c in sorted(kinds["sum"]):
        out[f"_sum_{c}"] = _exact_sums(g, ev[f"_s_{c}"].to_numpy(dtype=object), len(out))
    for c in sorted(kinds["min"]):
        out[f"_min_{c}"] = g[f"_f_{c}"].min()
    for c in sorted(kinds["max"]):
        out[f"_max_{c}"] = g[f"_f_{c}"].max()
    for c in sorted(kinds["last"]):
        out[f"_last_{c}"] = _latest_value(ev, keys, f"_v_{c}")
    for a in dc:
        out[f"_set_{a.feature_name}"] = _distinct_sets(g, ev[f"_d_{a.feature_name}"].to_numpy(dtype=object), len(out))
    return out.reset_index()[keys + ["_k"] + partial_names(view)]


def _exact_sums(g, scaled: np.ndarray, groups: int) -> np.ndarray:
    """Per group of ``g`` (in its sorted order), the exact sum of its scaled values (Python
    ints, None = null): one pass over the values, not a call per group."""
    out = [0] * groups
    for gi, x in zip(g.ngroup().to_numpy().tolist(), scaled.tolist()):
        if x is not None:
            out[gi] += x
    return np.array(out, dtype=object)


def _distinct_sets(g, values: np.ndarray, groups: int) -> pd.Series:
    """Per group of ``g`` (in its sorted order), the sorted distinct non-null values: one pass."""
    sets: list[set] = [set() for _ in range(groups)]
    for gi, v in zip(g.ngroup().to_numpy().tolist(), values.tolist()):
        if not _isnull(v):
            sets[gi].add(v)
    return pd.Series([tuple(sorted(x)) for x in sets], dtype=object).to_numpy()


def _isnull(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def _latest_value(frame: pd.DataFrame, keys: list[str], col: str, time_col: str = "_t") -> pd.Series:
    """Per (keys, _k): the value at the latest time; at equal times the greatest (nulls least)."""
    ranked = frame.assign(_present=[not _isnull(v) for v in frame[col]])
    ranked = ranked.sort_values(keys + ["_k", time_col, "_present", col], kind="mergesort", na_position="first")
    return ranked.groupby(keys + ["_k"], sort=True, dropna=False).tail(1).set_index(keys + ["_k"])[col]


def merge_partials(view: WindowedView, partials: pd.DataFrame) -> pd.DataFrame:
    """Partials of the same (entity, bucket) merged into one row: the partials of the union
    of their events (a stream's late event joins its bucket's stored partial here)."""
    keys = view.join_keys
    if partials.empty:
        return partials
    # Most (entity, bucket) pairs occur once (a stream's new bucket, a stored one no event
    # touched): they pass through; only the repeated ones are merged.
    repeated = partials.duplicated(keys + ["_k"], keep=False).to_numpy()
    if not repeated.all():
        once = partials[~repeated][keys + ["_k"] + partial_names(view)]
        if not repeated.any():
            return once.sort_values(keys + ["_k"], kind="mergesort").reset_index(drop=True)
        both = pd.concat([once, _merge_repeated(view, partials[repeated])], ignore_index=True)
        return both.sort_values(keys + ["_k"], kind="mergesort").reset_index(drop=True)
    return _merge_repeated(view, partials)


def _merge_repeated(view: WindowedView, partials: pd.DataFrame) -> pd.DataFrame:
    keys = view.join_keys
    g = partials.groupby(keys + ["_k"], sort=True, dropna=False)
    out = g["_n"].sum().to_frame()
    out["_last_ts"] = g["_last_ts"].max()
    for name in partial_names(view)[2:]:
        if name.startswith("_sum_"):
            out[name] = g[name].agg(lambda s: sum(int(x) for x in s))
        elif name.startswith("_min_"):
            out[name] = g[name].min()
        elif name.startswith("_max_"):
            out[name] = g[name].max()
        elif name.startswith("_last_"):
            out[name] = _latest_value(partials, keys, name, time_col="_last_ts")
        elif name.startswith("_set_"):
            out[name] = g[name].agg(lambda s: tuple(sorted({v for t in s for v in t})))
    return out.reset_index()[keys + ["_k"] + partial_names(view)]


def _empty_partials(view: WindowedView, like: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=like[c].dtype if c in like else "object")
                         for c in view.join_keys + ["_k"] + partial_names(view)})


def change_points(view: WindowedView, partials: pd.DataFrame) -> np.ndarray:
    """Per partial row, the boundaries where it changes a value (enter, and leave each window)."""
    offsets = sorted({1} | {hops(view, a) + 1 for a in view.aggregations})
    return np.add.outer(partials["_k"].to_numpy(dtype="int64"), np.array(offsets, dtype="int64"))


def next_change(view: WindowedView, partials: pd.DataFrame, after_b: int) -> pd.DataFrame:
    """Per entity of ``partials`` (grouped by entity, as the stream stores them): the first
    boundary after ``after_b`` where one of its values changes (``_next``, hop units), or
    none when every bucket has left every window."""
    keys = view.join_keys
    if partials.empty:
        return partials[keys].assign(_next=np.array([], dtype="int64"))
    p = partials.reset_index(drop=True)
    _gid, starts = _entity_runs(p, keys)
    cps = change_points(view, p)
    cps = np.where(cps > after_b, cps, np.iinfo("int64").max).min(axis=1)
    nxt = p.iloc[starts][keys].reset_index(drop=True).assign(_next=np.minimum.reduceat(cps, starts))
    return nxt[nxt["_next"] < np.iinfo("int64").max]


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


def rows_at(view: WindowedView, partials: pd.DataFrame, b: int) -> pd.DataFrame:
    """Every entity's row at boundary ``b`` (hop units) — the rows ``view_rows(view, partials,
    since_b=b, until_b=b + 1, probes=<every entity at b>)`` returns, without enumerating the
    change points: what the stream publishes when a boundary passes. ``partials`` must be
    grouped by entity, each entity's buckets in order (as the stream stores them)."""
    keys = view.join_keys
    if partials.empty:
        return _empty_rows(view, partials)
    p = partials.reset_index(drop=True)
    gid, starts = _entity_runs(p, keys)
    k = p["_k"].to_numpy(dtype="int64")
    if (np.diff(k)[np.diff(gid) == 0] <= 0).any():
        raise ValueError("partials must be grouped by entity, buckets ascending")
    qg = np.flatnonzero(k[starts] < b)  # an entity with no bucket before b has no row
    return _rows_at(view, p, gid, starts, k, qg, np.full(len(qg), b, dtype="int64"))


def _entity_runs(p: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """For a frame grouped by entity: each row's entity number (0, 1, ... in order) and the
    first row of each entity. Null keys are one entity (as ``groupby(dropna=False)``)."""
    change = np.zeros(max(len(p) - 1, 0), dtype=bool)
    for key in keys:
        c = p[key].to_numpy()
        ne = c[1:] != c[:-1]
        if c.dtype == object or c.dtype.kind == "f":
            na = pd.isna(c)
            ne &= ~(na[1:] & na[:-1])
        change |= ne
    starts = np.r_[0, np.flatnonzero(change) + 1]
    gid = np.zeros(len(p), dtype="int64")
    gid[starts[1:]] = 1
    return np.cumsum(gid), starts


def _rows_at(view: WindowedView, p: pd.DataFrame, gid: np.ndarray, starts: np.ndarray, k: np.ndarray,
             qg: np.ndarray, qb: np.ndarray) -> pd.DataFrame:
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
        out[key] = p[key].to_numpy()[starts][qg]
    out[TS] = pd.to_datetime(qb * hop_us(view), unit="us", utc=True)
    prefix: dict[str, np.ndarray] = {}

    def lo_of(w: int) -> np.ndarray:
        return np.searchsorted(comp, qg * span + np.clip(qb - w - kmin, 0, span - 1), side="left")

    def cum(name: str) -> np.ndarray:
        if name not in prefix:
            vals = p[name].to_numpy()
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
            total = np.array([int(x) / SCALE for x in s], dtype="float64")
            out[name] = total if a.function == "sum" else np.where(n > 0, total / np.where(n > 0, n, 1), np.nan)
        elif a.function in ("min", "max"):
            out[name] = _range_reduce(p[f"_{a.function}_{c}"].to_numpy(dtype="float64"), lo, hi,
                                      np.fmin if a.function == "min" else np.fmax)
        elif a.function == "distinct_count":
            out[name] = _distinct_counts(p, gid, k, kmin, span, w, f"_set_{name}", qg, qb)
        elif a.function in ("last_time", "last"):
            inside = hi > lo  # the latest bucket before b is in the window
            j = np.maximum(hi - 1, 0)
            if a.function == "last_time":
                out[name] = np.where(inside, p["_last_ts"].to_numpy(dtype="int64")[j] / 1e6, np.nan)
            else:
                vals = p[f"_last_{c}"].to_numpy(dtype=object)[j]
                out[name] = pd.Series(np.where(inside, vals, None), dtype=object)
        else:
            raise ValueError(f"unknown aggregation {a.function}")
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


def _distinct_counts(p: pd.DataFrame, gid: np.ndarray, k: np.ndarray, kmin: int, span: int, w: int, col: str,
                     qg: np.ndarray, qb: np.ndarray) -> np.ndarray:
    """Distinct values in ``[b - w, b)``: a value is present from the boundary after an
    occurrence until ``w`` hops after the last occurrence closer than ``w`` to the previous."""
    sets = p[col].to_numpy(dtype=object)
    lens = np.fromiter((len(s) for s in sets), dtype="int64", count=len(sets))
    if lens.sum() == 0:
        return np.zeros(len(qg), dtype="int64")
    og, ok_ = np.repeat(gid, lens), np.repeat(k, lens)
    codes, _ = pd.factorize(pd.Series([v for s in sets for v in s], dtype=object), sort=False)
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
