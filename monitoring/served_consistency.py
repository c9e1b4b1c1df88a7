"""Consistency as served (Chronon's measure, on our prediction log): the feature values
each prediction was actually scored with, against the offline point-in-time values for
the same transaction. Target: zero mismatches once the batch job has caught up.

For every logged prediction (the ``predictions`` topic landed in the lake; a stable
share of them with ``sample``), each feature in its ``features`` vector is compared with:

* a windowed feature ``<view>__<feature>``: the latest row of the view's offline table
  (``LakeLayout.features_dir``) at or before the comparison time, for the prediction's
  entity — Feast's point-in-time semantics (the views have no TTL). One DuckDB ``ASOF``
  join per view for all predictions at once;
* an on-demand feature ``<transform>__<output>``: the transform's own function
  (``RequestTransform.function``) applied to those offline values and to the request
  inputs derived from the logged transaction (amount, event time) by
  ``skewless.features.request_inputs.derive`` — what training computes for it;
* a request input the model takes as a feature (``amount``): derived the same way.

**The comparison time** (``at``) is the transaction's ``event_time`` by default: the
time training joins the transaction's features at, and the time the on-demand features
already use (``event_epoch``), so a difference is training/serving skew for that very
transaction. Live, it is the request time to within milliseconds; for replayed or
simulated traffic it is not, and ``at="predicted_at"`` compares at the wall-clock time
the online store was read instead.

**Coverage: which predictions the batch job has caught up with.** The offline value at
``t`` is final once the batch job has read every event before ``t``. The last
incremental ETL run (``state/etl_state.json``: when it started, the output dates it
computed) read every file landed before it started, so a prediction at ``t`` is
*covered* when ``t`` is before both

1. the end of the dates that run computed (``range[1]``; the offline rows stop there), and
2. the earliest event time (the contract's time field: ``event_time``, ``label_time``) in
   any file of a topic the service's views read (sources and enrichments) that landed
   *since* the run started (``LakeLayout.raw_files``: a compaction keeps its inputs' landing time; the files' Parquet statistics, no
   rows read) — events the offline tables do not hold yet.

Later predictions count as ``not_yet_covered``. Events still in Kafka, not landed, are
not seen (run ``skewless ingest consume`` first); events later than that are late
events, which the next ETL run corrects.

**Per feature**: compared (covered predictions that logged it), matches, mismatches (both
present, not equal: integers exactly, floats to 1e-9 relative — ``monitoring.consistency``'s
rule), missing (served null or NOT_FOUND where offline has a value), extra (served a value
where offline has none), and SMAPE in percent (the mean of 2|s-o|/(|s|+|o|), 0 when both
are 0) over the pairs where both sides have a value. ``compared = matches + mismatches +
missing + extra``. Each copy of a prediction counts once (by ``request_id``, the first
landed, as every reader of the lake counts events).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import date, datetime, time as dtime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import orjson
import pandas as pd

from monitoring.consistency import equal_values
from skewless.contracts import CONTRACTS
from skewless.errors import ConfigError, DataError
from skewless.features.dsl import FeatureServiceSpec, RequestTransform, WindowedView
from skewless.features.feast_objects import TIMESTAMP_FIELD
from skewless.features.request_inputs import derive
from monitoring.predictions import landed_predictions
from skewless.lake_layout import LakeLayout
from skewless.settings import Settings

AT_COLUMNS = ("event_time", "predicted_at")
ROW = "_row"
AT = "_at"
MAX_EXAMPLES_PER_FEATURE = 2

Step = Callable[[str], None]


@dataclass(frozen=True)
class ServedFeature:
    """One feature a prediction can log, and how its offline value is computed."""

    name: str  # as logged: view__feature, transform__output, or a request input's name
    kind: str  # "view", "on_demand" or "request"
    exact: bool  # an integer feature: compared exactly
    keys: tuple[str, ...]  # the entity columns that identify it (for examples)
    source: str  # the view, transform or request input it comes from


def served_features(spec: FeatureServiceSpec) -> dict[str, ServedFeature]:
    """Every feature a prediction of ``spec`` can log, by its logged name (the service's:
    a view feature it excludes is no model input, and is not logged)."""
    out: dict[str, ServedFeature] = {}
    views = {v.name: v for v in spec.views}
    for v in spec.views:
        served = set(spec.features_of(v))
        for a in v.aggregations:
            if a.feature_name not in served:
                continue
            name = f"{v.name}__{a.feature_name}"
            out[name] = ServedFeature(name, "view", a.output_type == "int64", tuple(v.join_keys), v.name)
    for t in spec.transforms:
        keys = tuple(dict.fromkeys(k for view, _ in t.inputs if view in views for k in views[view].join_keys))
        for output, dtype in t.outputs.items():
            name = f"{t.name}__{output}"
            out[name] = ServedFeature(name, "on_demand", dtype == "int64", keys, t.name)
        for r in t.request_inputs:
            if r.as_feature:
                out[r.name] = ServedFeature(r.name, "request", False, (), t.name)
    return out


# -- which predictions the batch job covers --------------------------------------------

def watched_topics(settings: Settings, views: Sequence[WindowedView]) -> dict[str, str]:
    """Contract -> topic of every contract the views read (sources and enrichments)."""
    out: dict[str, str] = {}
    for v in views:
        for contract in (v.source.contract, *(v.source.enrich[:1] if v.source.enrich else ())):
            if contract not in CONTRACTS:
                raise ConfigError(f"view {v.name} reads events of {contract!r}, which is no event contract")
            out[contract] = getattr(settings.topics, contract)
    return out


def coverage(settings: Settings, views: Sequence[WindowedView]) -> dict[str, Any]:
    """Until when the offline tables are final for the views (see the module docstring):
    ``covered_until`` (a UTC datetime), with what decided it."""
    layout = LakeLayout.of(settings)
    path = layout.etl_state_path
    try:
        state = json.loads(path.read_text())
        started_at = float(state["started_at"])
        range_end = date.fromisoformat(state["range"][1])
    except FileNotFoundError:
        raise DataError(f"the batch job has not run an incremental run yet (no {path})",
                        "run: skewless etl run") from None
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise DataError(f"unreadable ETL state {path}: {type(exc).__name__}: {exc}"[:300],
                        "run: skewless etl run (it rewrites the state)") from None
    ends = {"etl_range_end": datetime.combine(range_end, dtime.min, tzinfo=timezone.utc)}
    landed_since: dict[str, int] = {}
    for contract, topic in watched_topics(settings, views).items():
        files = [f.path for f in layout.raw_files(topic) if f.landed_at >= started_at]
        landed_since[contract] = len(files)
        earliest = [t for t in (_min_time(f, CONTRACTS[contract].time_field) for f in files) if t is not None]
        if earliest:
            ends[f"landed_since_etl:{contract}"] = min(earliest)
    decided_by = min(ends, key=lambda k: ends[k])
    return {
        "covered_until": ends[decided_by], "decided_by": decided_by,
        "etl_started_at": datetime.fromtimestamp(started_at, timezone.utc),
        "bounds": ends, "files_landed_since_etl": landed_since,
    }


def _min_time(path: Path, column: str) -> datetime | None:
    """The least ``column`` in a Parquet file: from the row groups' statistics, else read."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    if column not in names:
        return None
    i = names.index(column)
    mins = []
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(i).statistics
        if stats is None or not stats.has_min_max:
            mins = None
            break
        mins.append(stats.min)
    if mins is None:
        value = pc.min(pq.read_table(path, columns=[column])[column]).as_py()
    else:
        value = min(mins) if mins else None
    if value is None:
        return None
    value = pd.Timestamp(value)
    return (value.tz_localize("UTC") if value.tzinfo is None else value.tz_convert("UTC")).to_pydatetime()


# -- the predictions ---------------------------------------------------------------------

def read_predictions(settings: Settings, since: datetime | None = None) -> tuple[pd.DataFrame, int]:
    """The landed predictions (``predicted_at >= since``), one per ``request_id`` (the
    first landed), oldest first; and how many duplicate copies were dropped."""
    frame, dropped = landed_predictions(settings, [
        "request_id", "transaction_id", "user_id", "merchant_id", "amount", "event_time", "predicted_at",
        "feature_service", "features"], since)
    return frame.sort_values(["predicted_at", "request_id"], kind="stable").reset_index(drop=True), dropped


def in_sample(request_ids: pd.Series, fraction: float) -> np.ndarray:
    """A stable share of the predictions: the same ids are picked on every run."""
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"the sample must be a fraction in (0, 1], got {fraction}")
    if fraction >= 1.0:
        return np.ones(len(request_ids), dtype=bool)
    hashes = pd.util.hash_pandas_object(request_ids.astype(str), index=False).to_numpy()
    return hashes < np.uint64(int(fraction * 2.0**64) - 1)


def _vectors(frame: pd.DataFrame, names: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], set]:
    """The logged feature vectors, parsed: per known feature its values (float64, NaN for
    null) and whether each prediction logged it at all; and the names nobody declared."""
    records = [orjson.loads(s) for s in frame["features"]]
    n = len(records)
    parsed = pd.DataFrame.from_records(records, index=range(n)) if n else pd.DataFrame(index=range(0))
    values, logged = {}, {}
    for name in names:
        if name not in parsed.columns:
            continue
        v = pd.to_numeric(parsed[name], errors="coerce").to_numpy(dtype="float64")
        values[name] = v
        # Absent and null both read as NaN: tell them apart only where it matters.
        logged[name] = (np.fromiter((name in r for r in records), dtype=bool, count=n) if np.isnan(v).any()
                        else np.ones(n, dtype=bool))
    return values, logged, set(parsed.columns) - set(names)


# -- the offline side --------------------------------------------------------------------

def offline_view(con: Any, layout: LakeLayout, view: WindowedView, entities: pd.DataFrame) -> pd.DataFrame:
    """The view's point-in-time values for each row of ``entities`` (``_row``, join keys,
    ``_at``): the latest offline row at or before ``_at`` for the entity, as float64 (NaN:
    no row, or a null value), in ``entities``' row order."""
    features = view.features
    out_cols = [f"{view.name}__{f}" for f in features]
    root = layout.features_dir(view.name)
    if not root.is_dir() or not any(p for p in root.rglob("*.parquet") if not p.name.startswith((".", "_"))):
        return pd.DataFrame({c: np.full(len(entities), np.nan) for c in out_cols}, index=entities.index)
    glob = str(root / "**" / "[!._]*.parquet").replace("'", "''")
    keys = view.join_keys
    cols = ", ".join(f'f."{f}" AS "{c}"' for f, c in zip(features, out_cols))
    on = " AND ".join(f'e."{k}" = f."{k}"' for k in keys)
    name = f"entities_{view.name}"
    con.register(name, entities[[ROW, *keys, AT]])
    try:
        sql = (f'SELECT e.{ROW}, {cols} FROM {name} e ASOF LEFT JOIN '
               f"(SELECT * FROM read_parquet('{glob}', hive_partitioning = false, union_by_name = true)) f "
               f'ON {on} AND e."{AT}" >= f."{TIMESTAMP_FIELD}" ORDER BY e.{ROW}')
        joined = con.execute(sql).df()
    finally:
        con.unregister(name)
    joined = joined.set_index(ROW).reindex(entities[ROW].to_numpy())
    return pd.DataFrame({c: pd.to_numeric(joined[c], errors="coerce").to_numpy(dtype="float64") for c in out_cols},
                        index=entities.index)


def on_demand(transform: RequestTransform, offline: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """The transform's outputs from the offline values of its inputs and the request
    inputs derived from the logged transactions: its own function, as training runs it."""
    inputs = pd.DataFrame({f"{v}__{f}": offline[f"{v}__{f}"].to_numpy(dtype="float64") for v, f in transform.inputs},
                          index=events.index)
    inputs = pd.concat([inputs, derive(transform.request_inputs, events)], axis=1)
    result = transform.function(inputs)
    return pd.DataFrame({f"{transform.name}__{o}": pd.to_numeric(pd.Series(np.asarray(result[o])), errors="coerce")
                         .to_numpy(dtype="float64") for o in transform.outputs}, index=events.index)


# -- the check -----------------------------------------------------------------------------

def _new_counts() -> dict[str, Any]:
    return {"compared": 0, "matches": 0, "mismatches": 0, "missing": 0, "extra": 0, "_smape_sum": 0.0, "_smape_n": 0}


def _finish(counts: dict[str, Any]) -> dict[str, Any]:
    n = counts.pop("_smape_n")
    s = counts.pop("_smape_sum")
    counts["smape_pct"] = round(100.0 * s / n, 9) if n else None
    return counts


def _plain(x: float) -> float | int | None:
    if np.isnan(x):
        return None
    return int(x) if float(x).is_integer() and abs(x) < 2**53 else float(x)


def check_served(
    settings: Settings,
    services: Sequence[FeatureServiceSpec],
    since: datetime | None = None,
    sample: float = 1.0,
    at: str = "event_time",
    max_examples: int = 10,
    on_step: Step | None = None,
) -> dict[str, Any]:
    """Compare the logged feature values of the landed predictions with the offline
    point-in-time values (see the module docstring); ``services``: the deployment's
    feature services (the definitions), matched by the name each prediction logged."""
    import duckdb

    if at not in AT_COLUMNS:
        raise ConfigError(f"compare at one of {', '.join(AT_COLUMNS)}, not {at!r}")
    in_sample(pd.Series([], dtype=str), sample)  # a bad fraction fails before any reading
    step = on_step or (lambda s: None)
    t0 = time.perf_counter()
    step("reading the predictions")
    frame, duplicates = read_predictions(settings, since)
    read_total = len(frame)
    frame = frame[in_sample(frame["request_id"], sample)].reset_index(drop=True)
    by_name = {s.name: s for s in services}
    unknown_services = frame.loc[~frame["feature_service"].isin(list(by_name)), "feature_service"].value_counts()
    frame = frame[frame["feature_service"].isin(list(by_name))].reset_index(drop=True)
    frame[AT] = pd.to_datetime(frame[at], utc=True)
    layout = LakeLayout.of(settings)

    features: dict[str, dict[str, Any]] = {}
    examples: list[dict[str, Any]] = []
    unknown_features: set[str] = set()
    not_covered = 0
    covered_info: dict[str, Any] = {}
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        for name in sorted(frame["feature_service"].unique()):
            spec = by_name[name]
            rows = frame[frame["feature_service"] == name].reset_index(drop=True)
            step(f"{name}: deciding what the batch job covers")
            cov = coverage(settings, spec.views)
            covered_info[name] = cov
            covered = (rows[AT] <= pd.Timestamp(cov["covered_until"])).to_numpy()
            not_covered += int((~covered).sum())
            rows = rows[covered].reset_index(drop=True)
            rows[ROW] = np.arange(len(rows))
            known = served_features(spec)
            values, logged, unknown = _vectors(rows, list(known))
            unknown_features |= unknown
            offline = _offline(con, layout, spec, rows, known, values, step)
            for fname, served in values.items():
                feat = known[fname]
                mask = logged[fname]
                _compare(fname, feat, served[mask], offline[fname].to_numpy()[mask], rows[mask],
                         features.setdefault(fname, _new_counts()), examples, at)
    finally:
        con.close()

    totals = _new_counts()
    for c in features.values():
        for k in totals:
            totals[k] += c[k]
    return {
        "at": at, "since": since.isoformat() if since else None, "sample": sample,
        "predictions": read_total, "duplicates_dropped": duplicates,
        "sampled": len(frame) + int(unknown_services.sum()),
        "unknown_feature_service": {str(k): int(v) for k, v in unknown_services.items()},
        "not_yet_covered": not_covered,
        "compared_predictions": len(frame) - not_covered,
        "coverage": {n: {"covered_until": c["covered_until"].isoformat(), "decided_by": c["decided_by"],
                         "etl_started_at": c["etl_started_at"].isoformat(),
                         "files_landed_since_etl": c["files_landed_since_etl"]} for n, c in covered_info.items()},
        "features": {k: _finish(v) for k, v in sorted(features.items())},
        "unknown_features": sorted(unknown_features),
        "totals": _finish(totals),
        "examples": _pick_examples(examples, max_examples),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def save_report(settings: Settings, report: dict[str, Any], now: datetime | None = None) -> Path:
    """Keep a check's result (counts and a few examples, no rows) under
    ``LakeLayout.served_dir`` for the monitoring report; returns its path."""
    now = now or datetime.now(timezone.utc)
    directory = LakeLayout.of(settings).served_dir
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{now:%Y%m%dT%H%M%S%fZ}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"checked_at": now.isoformat(), **report}, default=str))
    tmp.replace(path)
    return path


def _offline(con: Any, layout: LakeLayout, spec: FeatureServiceSpec, rows: pd.DataFrame,
             known: dict[str, ServedFeature], values: dict[str, np.ndarray], step: Step) -> pd.DataFrame:
    """The offline values of every logged feature of ``spec`` for ``rows``."""
    logged = [known[n] for n in values]
    transforms = [t for t in spec.transforms if any(f.source == t.name for f in logged)]
    needed = {f.source for f in logged if f.kind == "view"} | {v for t in transforms for v, _ in t.inputs}
    parts = []
    for view in spec.views:
        if view.name not in needed:
            continue
        missing = [k for k in view.join_keys if k not in rows.columns]
        if missing:
            raise DataError(f"view {view.name} is keyed by {missing}, which the prediction log does not hold")
        step(f"{spec.name}: point-in-time values of {view.name}")
        parts.append(offline_view(con, layout, view, rows))
    offline = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=rows.index)
    for t in transforms:
        step(f"{spec.name}: recomputing {t.name}")
        offline = pd.concat([offline, on_demand(t, offline, rows)], axis=1)
        request = derive([r for r in t.request_inputs if r.as_feature and r.name not in offline.columns], rows)
        offline = pd.concat([offline, request.astype("float64")], axis=1)
    return offline


def _compare(name: str, feat: ServedFeature, served: np.ndarray, offline: np.ndarray, rows: pd.DataFrame,
             counts: dict[str, Any], examples: list[dict[str, Any]], at: str) -> None:
    s_null, o_null = np.isnan(served), np.isnan(offline)
    same = equal_values(served, offline, feat.exact)
    missing = s_null & ~o_null
    extra = ~s_null & o_null
    mismatch = ~same & ~missing & ~extra
    both = ~s_null & ~o_null
    denom = np.abs(served[both]) + np.abs(offline[both])
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(denom > 0, 2.0 * np.abs(served[both] - offline[both]) / denom, 0.0)
    counts["compared"] += len(served)
    counts["matches"] += int(same.sum())
    counts["mismatches"] += int(mismatch.sum())
    counts["missing"] += int(missing.sum())
    counts["extra"] += int(extra.sum())
    counts["_smape_sum"] += float(terms.sum())
    counts["_smape_n"] += int(both.sum())
    for kind, mask in (("mismatch", mismatch), ("missing", missing), ("extra", extra)):
        for i in np.flatnonzero(mask)[:MAX_EXAMPLES_PER_FEATURE]:
            r = rows.iloc[i]
            examples.append({
                "kind": kind, "feature": name, "request_id": r["request_id"], "transaction_id": r["transaction_id"],
                "entity": {k: r[k] for k in feat.keys}, at: r[AT].isoformat(),
                "served": _plain(served[i]), "offline": _plain(offline[i]),
            })


def _pick_examples(examples: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` examples, spread over features: each feature's first, then seconds."""
    firsts, rest, seen = [], [], set()
    for e in examples:
        key = (e["feature"], e["kind"])
        (rest if key in seen else firsts).append(e)
        seen.add(key)
    return (firsts + rest)[:limit]
