"""Drift of live traffic: the prediction log in the lake against the drift reference saved
with the champion's training run (``skewless monitor drift``).

* **Reference**: the histograms ``skewless train`` saved in the MLflow run
  (``skewless.histograms.REFERENCE_ARTIFACT``): every model feature over the training set,
  and the model's scores on its held-out test rows. The champion's run by default
  (registry alias ``champion``), or any run by id.
* **Live**: the landed predictions (``predictions`` topic, one per ``request_id``, the
  first landed) with ``predicted_at`` in the window — by default the last
  ``monitoring.window`` (24h) up to now; ``since`` alone: from then until now; both: from
  ``since`` for ``window``. Only predictions of the reference's model version are compared
  (the score is that model's); the others are counted. Each prediction's logged ``features``
  (the exact vector scored) gives the feature values; a feature the log no longer carries
  reads as null, so a broken upstream field shows as a column turning null.
* **Dependence**: rows of one ``monitoring.cluster_key`` (``user_id``: the card) within one
  ``monitoring.cluster_block`` (24h) are one cluster — a fraud burst is several rows that
  land together. The live sample's design effects are measured on the logged key; the
  reference's were measured by ``skewless train`` on the training set's and saved with it
  (a reference saved before then has none: the live figures stand for both, as under no
  drift both come from one process). See ``skewless.design_effect``.
* **Verdicts**: ``monitoring.drift.detect`` (material and significant, Holm at alpha).

Each check is saved under ``<state_dir>/monitoring/drift/`` with the live histograms (no
rows): the report and the drift history read them. Its figures (per feature: statistic,
missing-rate change, verdict) also become the latest drift status
(``skewless.drift_status``, ``<state_dir>/monitoring/drift_latest.json``) unless a check of
newer traffic is there: serving exports it as Prometheus gauges.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import orjson
import pandas as pd

from monitoring.drift import detect
from skewless import drift_status
from skewless.contracts import PREDICTIONS
from skewless.design_effect import cluster_ids, design_effects
from skewless.errors import ConfigError, DataError
from skewless.features.dsl import parse_duration
from skewless.histograms import REFERENCE_ARTIFACT, SCORE, Histogram, read_reference_document, summarize_like
from monitoring.predictions import landed_predictions
from skewless.lake_layout import LakeLayout
from skewless.registry import CHAMPION, ModelNotFoundError, mlflow_client
from skewless.settings import Settings


def parse_window(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError:
        raise ConfigError(f"window must be a duration like 24h, 90m or 7d, got {text!r}") from None


def live_window(settings: Settings, since: datetime | None, window: str | None,
                now: datetime | None = None) -> tuple[datetime, datetime]:
    """``[start, end)`` of the live sample (see the module docstring)."""
    now = now or datetime.now(timezone.utc)
    if since is not None and window is not None:
        return since, since + parse_window(window)
    if since is not None:
        return since, now
    return now - parse_window(window or settings.monitoring.window), now


def reference_run(settings: Settings, run_id: str | None = None) -> str:
    """The run holding the reference: ``run_id``, else the champion's training run."""
    if run_id:
        return run_id
    from mlflow.exceptions import MlflowException

    name = settings.training.model_name
    try:
        return str(mlflow_client(settings).get_model_version_by_alias(name, CHAMPION).run_id)
    except MlflowException as exc:
        raise ModelNotFoundError(f"model '{name}' has no champion to take the drift reference from",
                                 "train and promote one (skewless train --promote), or pass --reference RUN") from exc


def load_reference(settings: Settings, run_id: str) -> tuple[dict[str, Histogram], dict[str, Any]]:
    """The drift reference saved with training run ``run_id``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow_client(settings)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file: no bar on stderr
    try:
        doc = mlflow.artifacts.load_dict(f"runs:/{run_id}/{REFERENCE_ARTIFACT}")
    except (MlflowException, OSError) as exc:
        raise DataError(f"run {run_id} has no drift reference ({REFERENCE_ARTIFACT})",
                        "runs trained before drift references were saved have none: retrain (skewless train "
                        "--promote), or pass --reference RUN of a newer run") from exc
    return read_reference_document(doc, f"run {run_id}: {REFERENCE_ARTIFACT}")


def read_live(settings: Settings, start: datetime, end: datetime) -> tuple[pd.DataFrame, int]:
    """The landed predictions in ``[start, end)``, one per request id (the first landed); and
    how many duplicate copies were dropped. With ``monitoring.cluster_key``, its column too."""
    key = settings.monitoring.cluster_key
    if key is not None and key not in {f.name for f in PREDICTIONS.fields}:
        raise ConfigError(f"monitoring.cluster_key '{key}' is not a field of the prediction log",
                          f"use one of {', '.join(f.name for f in PREDICTIONS.fields if f.name.endswith('_id'))}, "
                          "or null (rows independent)")
    columns = ["request_id", "predicted_at", "model_version", "score", "features"]
    frame, dropped = landed_predictions(settings, columns + ([key] if key and key not in columns else []), start, end)
    return frame.reset_index(drop=True), dropped


def feature_columns(frame: pd.DataFrame, names: list[str]) -> dict[str, np.ndarray]:
    """Each named feature's logged values (NaN where null or not logged)."""
    records = [orjson.loads(s) if s else {} for s in frame["features"]]
    parsed = pd.DataFrame.from_records(records, index=range(len(records))) if records else pd.DataFrame()
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name in parsed.columns:
            out[name] = pd.to_numeric(parsed[name], errors="coerce").to_numpy(dtype="float64")
        else:
            out[name] = np.full(len(frame), np.nan)
    return out


def check_drift(settings: Settings, run_id: str | None = None, since: datetime | None = None,
                window: str | None = None, now: datetime | None = None, save: bool = True,
                on_step: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Drift of the live predictions against the reference run (see the module docstring)."""
    now = now or datetime.now(timezone.utc)
    start, end = live_window(settings, since, window, now)
    if start >= end:
        raise ConfigError(f"the live window is empty: {start.isoformat()} is not before {end.isoformat()}")
    on_step("loading the drift reference")
    run = reference_run(settings, run_id)
    reference, meta = load_reference(settings, run)
    on_step(f"reading predictions from {start.isoformat()} to {end.isoformat()}")
    frame, duplicates = read_live(settings, start, end)
    version = meta.get("model_version")
    other_versions = 0
    if version is not None and len(frame):
        ours = frame["model_version"] == version
        other_versions = int((~ours).sum())
        frame = frame[ours].reset_index(drop=True)
    if frame.empty:
        raise DataError(f"no predictions{f' by model version {version}' if version else ''} between "
                        f"{start.isoformat()} and {end.isoformat()}" +
                        (f" ({other_versions:,} by other versions)" if other_versions else ""),
                        "widen the window (--window, --since), or compare with that model's run (--reference RUN)")
    on_step(f"comparing {len(frame):,} predictions with the reference")
    columns = feature_columns(frame, [n for n in reference if n != SCORE])
    if SCORE in reference:
        columns[SCORE] = frame["score"].to_numpy(dtype="float64", na_value=np.nan)
    live = summarize_like(reference, columns, settings.monitoring.max_categories)
    live_effects = None
    mon = settings.monitoring
    if mon.cluster_key:
        on_step(f"measuring how dependent the rows are (one {mon.cluster_key} within {mon.cluster_block})")
        clusters = cluster_ids(frame[mon.cluster_key], frame["predicted_at"], mon.cluster_block)
        live_effects = design_effects(reference, columns, clusters)
    report = detect(reference, live, mon, meta.get("design_effects"), live_effects)
    out = {
        "checked_at": now.isoformat(),
        "reference_run": run, "model_version": version, "reference_rows": meta.get("rows"),
        "window": {"start": start.isoformat(), "end": end.isoformat()}, "predictions": len(frame),
        "other_model_versions": other_versions, "duplicates_dropped": duplicates,
        "clusters": {"key": mon.cluster_key, "block": mon.cluster_block} if mon.cluster_key else None,
        "design_effects": {"reference": meta.get("design_effects"), "live": live_effects},
        **report.to_dict(),
    }
    if save:
        out["saved"] = str(_save(settings, out, live))
        out["latest"] = drift_status.write(LakeLayout.of(settings).drift_latest_path, status_of(out, now, start, end))
    return out


def status_of(result: dict[str, Any], now: datetime, start: datetime, end: datetime) -> drift_status.DriftStatus:
    """The figures of a check's result that serving exports."""
    features = {}
    for f in result["features"]:
        signals = {s["signal"]: s for s in f["signals"]}
        dist, miss = signals["distribution"], signals["missing"]
        features[f["name"]] = drift_status.FeatureFigures(statistic=dist["statistic"], score=dist["value"],
                                                          missing_rate_change=miss["value"], drifted=f["drifted"])
    return drift_status.DriftStatus(checked_at=now.timestamp(), window_start=start.timestamp(),
                                    window_end=end.timestamp(), drifted=result["drifted"],
                                    predictions=result["predictions"], model_version=result["model_version"],
                                    reference_run=result["reference_run"], features=features)


def _save(settings: Settings, result: dict[str, Any], live: dict[str, Histogram]):
    directory = LakeLayout.of(settings).drift_dir
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(result["window"]["end"]).strftime("%Y%m%dT%H%M%S%fZ")
    path = directory / f"{stamp}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**result, "live_histograms": {n: h.to_dict() for n, h in live.items()}}))
    tmp.replace(path)
    return path
