"""``skewless train``: Feast training set -> candidate models -> cost-based evaluation -> MLflow.

1. the rows: every transaction in the window, labelled by what was known at the cutoff
   (``training.labels``);
2. the features: the point-in-time join for the FeatureService the model will be served
   with — the same definitions serving reads — by the engine ``training.pit_engine``
   names: the DuckDB ASOF join over Feast's registry (``training.pit_join``, the default
   and the fastest), the same join as a Spark job (``training.pit_join_spark``, for data
   beyond one machine), or Feast's own ``get_historical_features``; tested to return the
   same values;
3. a time-ordered split (train < validation < test), time-series cross-validation on
   train, each candidate fitted on train, its threshold chosen by cost on validation, the
   model chosen by validation PR-AUC (``training.selection``: the choice never sees the
   test split); then every candidate reported on test, once, the others for comparison,
   its cost and savings with bootstrap intervals (resampling cards: ``cost_ci_low``, ...);
4. MLflow: parameters, metrics, data window, Feast project and FeatureService, feature
   list, plots; the best candidate is saved as a model artifact and registered (and
   promoted to champion on request); the drift reference (histograms of the training
   set's model features, and of the chosen model's scores on test) is saved with the run
   for ``skewless monitor drift``.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from skewless.errors import ConfigError, DataError
from skewless.features.feast_objects import service_request_inputs
from skewless.model_artifact import ModelArtifact
from skewless.registry import promote, register
from skewless.settings import Settings
from training.labels import label_frame
from training.models import candidates, matrix, time_split
from training.promotion import row_costs, total_interval
from training.selection import fit_and_choose, report_on_test
from training.tracking import importance_plot, log_drift_reference, log_run, pr_curve_plot

def feature_names(store: Any, service_name: str) -> list[str]:
    """The FeatureService's features in order, with Feast's full names ``view__feature``."""
    service = store.get_feature_service(service_name)
    names = []
    for projection in service.feature_view_projections:
        for f in projection.features:
            names.append(f"{projection.name_to_use()}__{f.name}")
    return names


def training_set(store: Any, service_name: str, rows: pd.DataFrame, engine: str = "feast",
                 settings: Settings | None = None) -> pd.DataFrame:
    """The point-in-time join of the service's features onto ``rows`` by ``engine``: Feast's
    own (``feast``), or one of the joins over Feast's registry that return the same values:
    DuckDB ASOF (``asof``) or a Spark job on ``settings.spark_master`` (``spark``)."""
    if engine == "asof":
        from training.pit_join import historical_features

        if settings is None:
            return historical_features(store, service_name, rows)
        return historical_features(store, service_name, rows, memory_limit=settings.training.duckdb_memory,
                                   tmp_dir=settings.state_dir / "tmp")
    if engine == "spark":
        from training.pit_join_spark import historical_features as on_spark

        if settings is None:
            raise ConfigError("the spark engine needs the settings (its master URL)")
        return on_spark(store, service_name, rows, settings)
    from training.pit_join import join_plan

    service = store.get_feature_service(service_name)
    job = store.get_historical_features(entity_df=rows, features=service, full_feature_names=True)
    # Feast joins the features its on-demand views read and keeps them; the other engines
    # return the service's features only (``join_plan``'s ``inputs_only``): so does this one.
    joins, _ = join_plan(store, service_name)
    frame = job.to_df()
    return frame.drop(columns=[c for j in joins for f in j.inputs_only if (c := j.column(f)) in frame.columns])


def add_cost_intervals(results: dict[str, dict[str, Any]], curves: dict[str, tuple[Any, Any]],
                       test_df: pd.DataFrame, settings: Settings) -> None:
    """Each candidate's test ``cost`` and ``savings`` get bootstrap intervals (``cost_ci_low``,
    ``cost_ci_high``, ...; MLflow ``<candidate>.cost_ci_low``, read by the monitoring report),
    resampling cards (``user_id``) so one card's burst of fraud moves together."""
    cfg, rt = settings.training, settings.retrain
    amounts = test_df["amount"].to_numpy(dtype=float)
    groups = test_df["user_id"].to_numpy() if "user_id" in test_df.columns else None  # rows, without cards
    for name, (y, scores) in curves.items():
        costs = row_costs(y, scores, amounts, results[name]["threshold"], cfg.review_cost)
        saved = np.where(np.asarray(y, dtype=bool), amounts, 0.0) - costs
        for metric, values in (("cost", costs), ("savings", saved)):
            low, high = total_interval(values, groups, rt.bootstrap, rt.confidence, rt.seed)
            results[name][f"{metric}_ci_low"], results[name][f"{metric}_ci_high"] = low, high


def train(
    settings: Settings,
    store: Any,
    feature_service: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    cutoff: datetime | None = None,
    promote_champion: bool = False,
    on_step: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    cfg = settings.training
    service_name = feature_service or cfg.feature_service
    t0 = time.perf_counter()
    on_step("reading labelled transactions from the lake")
    # The request inputs (amount, event_epoch) derived from each transaction as serving derives them.
    request_inputs = service_request_inputs(store, service_name)
    request_features = [r.name for r in request_inputs if r.as_feature]  # also model inputs
    rows = label_frame(settings, start, end, cutoff, request_inputs)
    if rows.empty or rows["label"].sum() < 10:
        raise DataError(
            f"not enough labelled data to train: {len(rows)} transactions, "
            f"{int(rows['label'].sum()) if len(rows) else 0} known frauds",
            "ingest more events (skewless ingest produce --events 50000 --days 30) or widen --start/--end",
        )
    on_step(f"building the training set through Feast ({len(rows):,} rows, service {service_name}, "
            f"{cfg.pit_engine} engine)")
    t1 = time.perf_counter()
    data = training_set(store, service_name, rows, cfg.pit_engine, settings)
    build_s = time.perf_counter() - t1
    features = feature_names(store, service_name) + request_features
    train_df, val_df, test_df = time_split(data, "event_timestamp")
    for name, part in (("train", train_df), ("validation", val_df), ("test", test_df)):
        if part["label"].sum() < 2:
            raise DataError(f"the {name} split has fewer than 2 frauds; ingest more days of data")

    # Every choice (thresholds, then the model) on train and validation; test only reports.
    selection = fit_and_choose(candidates(features, request_features, seed=cfg.seed), train_df, val_df,
                               cfg.review_cost, cfg.target_precision, on_step=on_step)
    best_name = selection.chosen
    cand, model = selection.fitted[best_name].candidate, selection.fitted[best_name].model
    on_step(f"chose {best_name} on {selection.split} {selection.metric}; reporting every candidate on test")
    results, curves = report_on_test(selection, test_df, cfg.review_cost, cfg.target_precision)
    on_step(f"bootstrap intervals of the test cost ({settings.retrain.bootstrap} resamples, by card)")
    add_cost_intervals(results, curves, test_df, settings)
    version = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    window = {"start": str(rows["event_timestamp"].min()), "end": str(rows["event_timestamp"].max()),
              "cutoff": str(cutoff or end or datetime.now(timezone.utc))}
    artifact = ModelArtifact(
        pipeline=model, model_name=cfg.model_name, version=version, feature_service=service_name,
        feast_project=store.project, features=cand.features, threshold=results[best_name]["threshold"],
        trained_at=datetime.now(timezone.utc).isoformat(), data_window=window,
        metrics={k: v for k, v in results[best_name].items() if isinstance(v, (int, float))}, candidate=best_name,
    )

    on_step("tracking the run in MLflow")
    with tempfile.TemporaryDirectory() as tmp:
        plots = {"pr_curve": pr_curve_plot(curves, Path(tmp) / "pr_curve.png")}
        if best_name == "hgb":
            from sklearn.inspection import permutation_importance

            imp = permutation_importance(model, matrix(val_df, cand.features), val_df["label"].to_numpy(),
                                         scoring="average_precision", n_repeats=3, random_state=cfg.seed)
            plots["importance"] = importance_plot(cand.features, imp.importances_mean, Path(tmp) / "importance.png")
        flat = {f"{m}.{k}": v for m, r in results.items() for k, v in r.items() if isinstance(v, (int, float))}
        params = {"feature_service": service_name, "feast_project": store.project, "features": ",".join(features),
                  "rows": len(data), "train_rows": len(train_df), "val_rows": len(val_df), "test_rows": len(test_df),
                  "review_cost": cfg.review_cost, "pit_engine": cfg.pit_engine, "chosen_model": best_name,
                  "selected_on": selection.split, "selection_metric": selection.metric,
                  "choosable": ",".join(selection.eligible), "test_split": "reported only, not used to choose",
                  "model_version": version, **window}
        run_id = log_run(settings, params, flat, artifact, plots,
                         tags={"feature_service": service_name, "feast_project": store.project,
                               "selected_on": selection.split})
    on_step("saving the drift reference (histograms of the features and the score)")
    log_drift_reference(settings, run_id, data, cand.features, curves[best_name][1], model_version=version)
    registered = register(settings, run_id)
    promoted = promote(settings, registered) if promote_champion else None
    return {
        "run_id": run_id, "model": cfg.model_name, "registered_version": registered,
        "promoted": promoted is not None, "model_version": version, "chosen": best_name,
        "selected_on": selection.split, "selection_metric": selection.metric, "choosable": list(selection.eligible),
        "feature_service": service_name, "features": features, "rows": len(data),
        "frauds": int(data["label"].sum()), "pit_engine": cfg.pit_engine, "training_set_seconds": round(build_s, 2),
        "training_set_rows_per_s": round(len(data) / build_s, 1) if build_s else None,
        "results": results, "seconds": round(time.perf_counter() - t0, 2),
    }
