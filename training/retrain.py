"""``skewless retrain``: a challenger on the newest mature labelled window, the champion and
the challenger on one frozen holdout, and a promotion only when the challenger clearly wins.

Windows, from the cutoff (default: now) back::

    ... challenger's training data ... | holdout (retrain.holdout_days) | too young to trust
                                       ^ holdout start                 ^ cutoff - training.label_maturity_days

* the **holdout** is the newest mature transactions: every one at least
  ``training.label_maturity_days`` old at the cutoff, so its chargebacks had time to
  arrive. It must start after the champion's training data ends (its ``data_window``),
  or the champion would be judged on rows it learned from: then nothing is trained and
  the error says so;
* the **challenger** is trained by ``skewless train`` itself on the transactions before the
  holdout (``retrain.window_days`` of them, default all), through the same FeatureService
  (``training.feature_service``): the same training set, candidates, choice on validation
  and threshold by cost. It is registered and gets the registry alias ``challenger``;
* the holdout's rows are labelled as known at the cutoff and joined through each model's
  FeatureService **once**: both models score the same frozen frame (its transaction ids
  are saved with the decision), each at its own threshold;
* the rule is ``training.promotion.decide``: expected cost lower by ``retrain.margin`` and
  the paired, card-clustered bootstrap interval of the difference above zero. A promotion
  moves the alias ``champion`` to the challenger (serving reloads it by itself within
  ``serving.reload_interval_s``) and removes ``challenger``; otherwise the champion stays
  and ``challenger`` marks the version that lost.

The decision, both evaluations and the holdout go to MLflow as one run of the experiment
``skewless-retrain``: metrics ``champion.<metric>`` and ``challenger.<metric>`` with their
bootstrap intervals ``<candidate>.<metric>_ci_low`` / ``_ci_high``, the difference
``difference.expected_cost`` with its interval, and ``decision.json``.

``drift_gate`` is ``--if-drift``: retrain only when the latest drift check
(``skewless.drift_status``) flagged drift for the model now serving.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import numpy as np
import pandas as pd

from skewless import drift_status
from skewless.errors import DataError
from skewless.features.feast_objects import service_request_inputs
from skewless.lake_layout import LakeLayout
from skewless.model_artifact import ModelArtifact
from skewless.registry import (CHALLENGER, CHAMPION, ModelNotFoundError, alias_version, ensure_experiment,
                               load_version, mlflow_client, set_alias, version_run)
from skewless.settings import Settings
from training.evaluation import evaluate
from training.labels import label_frame
from training.promotion import Decision, decide, row_costs
from training.trainer import train, training_set

EXPERIMENT = "skewless-retrain"
ROLES = (CHAMPION, CHALLENGER)
MIN_HOLDOUT_FRAUDS = 5


def drift_gate(settings: Settings) -> tuple[bool, str]:
    """Whether ``--if-drift`` retrains: the latest drift check flagged drift, and it checked
    the model that is champion now (a check of a replaced model says nothing about the
    new one). The reason, one sentence, either way."""
    status = drift_status.read(LakeLayout.of(settings).drift_latest_path)
    if status is None:
        return False, "no drift check saved yet (skewless monitor drift): nothing says the champion is drifting"
    window = (f"{datetime.fromtimestamp(status.window_start, timezone.utc).isoformat()} .. "
              f"{datetime.fromtimestamp(status.window_end, timezone.utc).isoformat()}")
    champion = alias_version(settings, CHAMPION)
    if champion is not None and status.model_version is not None:
        serving = load_version(settings, champion).version
        if serving != status.model_version:
            return False, (f"the latest drift check ({window}) compared model {status.model_version}, but the "
                           f"champion is now {serving}: run skewless monitor drift for it first")
    if not status.drifted:
        return False, f"the latest drift check ({window}, {status.predictions:,} predictions) found no drift"
    flagged = sorted(n for n, f in status.features.items() if f.drifted)
    return True, (f"the latest drift check ({window}, {status.predictions:,} predictions) flagged drift in "
                  f"{', '.join(flagged) or 'the dataset'}")


def windows(settings: Settings, cutoff: datetime) -> dict[str, datetime | None]:
    """The challenger's training window and the holdout (see the module docstring)."""
    mature_end = cutoff - timedelta(days=settings.training.label_maturity_days)
    holdout_start = mature_end - timedelta(days=settings.retrain.holdout_days)
    days = settings.retrain.window_days
    return {"train_start": holdout_start - timedelta(days=days) if days else None, "holdout_start": holdout_start,
            "holdout_end": mature_end, "cutoff": cutoff}


def _holdout_frame(settings: Settings, store: Any, services: set[str], start: datetime,
                   cutoff: datetime) -> dict[str, pd.DataFrame]:
    """The holdout's labelled transactions joined through each FeatureService, frozen once."""
    inputs: dict[str, Any] = {}
    for svc in sorted(services):
        for r in service_request_inputs(store, svc):
            inputs.setdefault(r.name, r)
    rows = label_frame(settings, start, None, cutoff, tuple(inputs.values()))
    if rows.empty or int(rows["label"].sum()) < MIN_HOLDOUT_FRAUDS:
        raise DataError(
            f"the holdout from {start.isoformat()} holds {len(rows):,} mature transactions and "
            f"{int(rows['label'].sum()) if len(rows) else 0} known frauds (at least {MIN_HOLDOUT_FRAUDS} needed)",
            "ingest more recent traffic, or widen retrain.holdout_days")
    return {svc: training_set(store, svc, rows, settings.training.pit_engine, settings) for svc in sorted(services)}


def _evaluate(model: ModelArtifact, frame: pd.DataFrame, settings: Settings) -> tuple[pd.DataFrame, dict[str, Any]]:
    cfg = settings.training
    scores = model.score(frame)
    y, amounts = frame["label"].to_numpy(), frame["amount"].to_numpy(dtype=float)
    metrics = evaluate(y, scores, amounts, model.threshold, cfg.review_cost, cfg.target_precision)
    costs = pd.DataFrame({"transaction_id": frame["transaction_id"].to_numpy(), "user_id": frame["user_id"].to_numpy(),
                          "cost": row_costs(y, scores, amounts, model.threshold, cfg.review_cost)})
    return costs, {**metrics, "threshold": model.threshold}


def retrain(settings: Settings, store: Any, cutoff: datetime | None = None, trigger: str = "on request",
            on_step: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Train a challenger, compare it with the champion on the holdout, promote or not, record."""
    t0 = time.perf_counter()
    cfg = settings.retrain
    cutoff = cutoff or datetime.now(timezone.utc)
    w = windows(settings, cutoff)
    holdout_start = w["holdout_start"]
    assert holdout_start is not None

    on_step("loading the champion")
    champion_version = alias_version(settings, CHAMPION)
    if champion_version is None:
        raise ModelNotFoundError(f"model '{settings.training.model_name}' has no champion to challenge",
                                 "train and promote one first: skewless train --promote")
    champion = load_version(settings, champion_version)
    trained_until = champion.data_window.get("end")
    if trained_until and pd.Timestamp(trained_until) >= pd.Timestamp(holdout_start):
        raise DataError(
            f"the champion (version {champion_version}) was trained on transactions up to {trained_until}, "
            f"inside the holdout from {holdout_start.isoformat()}: there is no newer mature data to judge it on",
            "retrain once newer traffic has matured (training.label_maturity_days), or lower retrain.holdout_days")

    on_step(f"training the challenger on the transactions before {holdout_start.isoformat()}")
    trained = train(settings, store, start=w["train_start"], end=holdout_start, cutoff=cutoff,
                    promote_champion=False, on_step=on_step)
    challenger_version = trained["registered_version"]
    set_alias(settings, CHALLENGER, challenger_version)
    challenger = load_version(settings, challenger_version)

    on_step(f"building the holdout from {holdout_start.isoformat()} through the feature service")
    frames = _holdout_frame(settings, store, {champion.feature_service, challenger.feature_service},
                            holdout_start, cutoff)
    costs, evaluations = {}, {}
    for role, model in ((CHAMPION, champion), (CHALLENGER, challenger)):
        on_step(f"scoring the holdout with the {role}")
        costs[role], evaluations[role] = _evaluate(model, frames[model.feature_service], settings)
    paired = costs[CHAMPION].merge(costs[CHALLENGER][["transaction_id", "cost"]], on="transaction_id",
                                   suffixes=("_champion", "_challenger"), validate="one_to_one")
    if len(paired) != len(costs[CHAMPION]) or len(paired) != len(costs[CHALLENGER]):
        raise DataError("the champion's and the challenger's holdout frames hold different transactions")

    on_step(f"paired bootstrap over {len(paired):,} transactions ({cfg.bootstrap} resamples)")
    decision = decide(paired["cost_champion"].to_numpy(), paired["cost_challenger"].to_numpy(),
                      groups=paired["user_id"].to_numpy(), margin=cfg.margin, resamples=cfg.bootstrap,
                      confidence=cfg.confidence, seed=cfg.seed)
    ids = sorted(paired["transaction_id"].astype(str))
    holdout = {"start": holdout_start.isoformat(), "end": w["holdout_end"].isoformat(),  # type: ignore[union-attr]
               "cutoff": cutoff.isoformat(), "rows": len(paired), "cards": decision.clusters,
               "frauds": int(frames[champion.feature_service]["label"].sum()),
               "transaction_ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}
    if decision.promote:
        on_step(f"promoting version {challenger_version} to champion")
        set_alias(settings, CHAMPION, challenger_version)
        mlflow_client(settings).delete_registered_model_alias(settings.training.model_name, CHALLENGER)
    versions = {CHAMPION: {"version": champion_version, "run_id": version_run(settings, champion_version),
                           "model_version": champion.version, "candidate": champion.candidate,
                           "trained_on": champion.data_window},
                CHALLENGER: {"version": challenger_version, "run_id": trained["run_id"],
                             "model_version": challenger.version, "candidate": challenger.candidate,
                             "trained_on": challenger.data_window}}
    summary = {"trigger": trigger, "promoted": decision.promote, "reason": decision.reason,
               "champion": alias_version(settings, CHAMPION), "previous_champion": champion_version,
               "challenger": challenger_version, "models": versions, "holdout": holdout,
               "evaluations": evaluations, "decision": decision.to_dict(), "seconds": 0.0}
    on_step("recording the decision in MLflow")
    summary["run_id"] = _record(settings, summary, decision, ids)
    _tag_versions(settings, summary)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary


def decision_metrics(decision: Decision, evaluations: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The run's metrics: per role its holdout figures (``champion.pr_auc``, ...), the expected
    cost per transaction and the total cost with bootstrap intervals (``champion.cost_ci_low``),
    and the paired difference (``difference.expected_cost``, ``_ci_low``, ``_ci_high``)."""
    out: dict[str, float] = {}
    n = decision.rows
    for role, mean, ci in ((CHAMPION, decision.champion_cost, decision.champion_cost_ci),
                           (CHALLENGER, decision.challenger_cost, decision.challenger_cost_ci)):
        for k, v in evaluations[role].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
                out[f"{role}.{k}"] = float(v)
        out[f"{role}.expected_cost"] = mean
        out[f"{role}.expected_cost_ci_low"], out[f"{role}.expected_cost_ci_high"] = ci
        out[f"{role}.cost_ci_low"], out[f"{role}.cost_ci_high"] = ci[0] * n, ci[1] * n
    out["difference.expected_cost"] = decision.difference
    out["difference.expected_cost_ci_low"], out["difference.expected_cost_ci_high"] = decision.difference_ci
    out["relative_saving"] = decision.relative
    out["promoted"] = 1.0 if decision.promote else 0.0
    return out


def _record(settings: Settings, summary: dict[str, Any], decision: Decision, ids: list[str]) -> str:
    import mlflow

    mlflow_client(settings)
    experiment_id = ensure_experiment(settings, EXPERIMENT)
    m = summary["models"]
    params = {"trigger": summary["trigger"], "decision": "promote" if decision.promote else "keep",
              "reason": decision.reason, "margin": decision.margin, "bootstrap": decision.resamples,
              "confidence": decision.confidence, "bootstrap_unit": "card (user_id), paired",
              "champion_version": m[CHAMPION]["version"], "champion_run": m[CHAMPION]["run_id"],
              "challenger_version": m[CHALLENGER]["version"], "challenger_run": m[CHALLENGER]["run_id"],
              **{f"holdout_{k}": v for k, v in summary["holdout"].items()}}
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"retrain v{m[CHALLENGER]['version']}",
                          tags={"kind": "retrain", "decision": params["decision"]}) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics(decision_metrics(decision, summary["evaluations"]))
        mlflow.log_dict({**{k: v for k, v in summary.items() if k != "seconds"}, "holdout_transaction_ids": ids},
                        "decision.json")
        return run.info.run_id


def _tag_versions(settings: Settings, summary: dict[str, Any]) -> None:
    client = mlflow_client(settings)
    name = settings.training.model_name
    verdict = "promoted" if summary["promoted"] else "rejected"
    client.set_model_version_tag(name, summary["challenger"], "retrain_decision", verdict)
    client.set_model_version_tag(name, summary["challenger"], "retrain_run", summary["run_id"])
