"""The last part of ``skewless demo``: the retraining loop on the demo's own traffic.

The demo's traffic changes part-way through (``ingestion.simulator``'s ``card-enumeration``
drift: waves of stolen cards, each used once for a small amount at one of a few merchants), and the
champion is trained on the days before the change, so the demo runs the loop a team runs
weeks after a deployment:

1. the champion's predictions of the last days (after the change): each transaction scored
   at its own time through the champion's FeatureService (the values serving would have
   read then; consistency as served shows they are the same), logged to the predictions
   topic as serving logs them, and landed by the consumer;
2. ``monitor drift`` on those days against the champion's training set;
3. ``retrain --if-drift``: a challenger on the newest mature window, both on one holdout,
   promoted only by the rule (``training.promotion``);
4. ``monitor report --out DIR``: the page, its path printed.

Timeline, from the traffic's start (``days`` long, ending now)::

    champion: [0, drift) | drift | challenger: [0, holdout) | holdout: [end - maturity - holdout_days, end - maturity)

The drift starts ``CHALLENGER_DRIFT_DAYS`` before the holdout, so the challenger's window
holds that many days of the new pattern, with labels known now.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from cli.common import console, progress
from skewless.settings import Settings

DRIFT_KIND = "card-enumeration"
CHALLENGER_DRIFT_DAYS = 4  # days of the new pattern before the holdout (the challenger learns from them)
MIN_CHAMPION_DAYS = 5  # days of traffic before the drift (the champion learns from them)
LIVE_DAYS = 7  # the drift check's window: the last days of the traffic


def drift_start(settings: Settings, start: datetime, days: int) -> datetime | None:
    """When the demo's traffic drifts, or None when ``days`` are too few for the loop (the
    champion's days, the challenger's, the holdout's and the labels' maturity)."""
    holdout_start = (start + timedelta(days=days) - timedelta(days=settings.training.label_maturity_days)
                     - timedelta(days=settings.retrain.holdout_days))
    at = (holdout_start - timedelta(days=CHALLENGER_DRIFT_DAYS)).replace(hour=0, minute=0, second=0, microsecond=0)
    return at if at >= start + timedelta(days=MIN_CHAMPION_DAYS) else None


def needed_days(settings: Settings) -> int:
    """The fewest days of traffic the loop runs on (``drift_start`` is then not None)."""
    return int(-(-(MIN_CHAMPION_DAYS + CHALLENGER_DRIFT_DAYS + settings.retrain.holdout_days
                   + settings.training.label_maturity_days) // 1))


def log_champion_predictions(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """The champion's predictions of the transactions in ``[start, end)``, each scored at its
    own time through its FeatureService, sent to the predictions topic (what serving sends)
    and landed by the consumer."""
    from ingestion.consumer import consume
    from ingestion.producer import make_producer
    from skewless.contracts import PREDICTIONS
    from skewless.features.feast_objects import service_request_inputs
    from skewless.features.store import feature_store
    from skewless.registry import load_champion
    from skewless.topics import ensure_topics
    from training.labels import label_frame
    from training.trainer import training_set

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the demo prints its own lines
    champion = load_champion(settings)
    store = feature_store(settings)
    # Every transaction of the window (labels play no part: a far cutoff keeps the young ones).
    far = end + timedelta(days=settings.training.label_maturity_days + 1)
    rows = label_frame(settings, start, end, far, service_request_inputs(store, champion.feature_service))
    frame = training_set(store, champion.feature_service, rows, settings.training.pit_engine, settings)
    scores = champion.score(frame)
    topic = settings.topics.predictions
    ensure_topics(settings, [topic])
    producer = make_producer(settings)
    failures: list[BaseException] = []
    try:
        with progress() as bar:
            task = bar.add_task("logging the champion's predictions", total=len(frame))
            columns = {f: frame[f].to_numpy(dtype="float64", na_value=float("nan")) for f in champion.features}
            for i, (r, score) in enumerate(zip(frame.itertuples(index=False), scores)):
                when = r.event_timestamp.isoformat()
                record = {"schema_version": PREDICTIONS.version, "request_id": f"demo-replay-{uuid.uuid4().hex}",
                          "transaction_id": r.transaction_id, "user_id": r.user_id, "merchant_id": r.merchant_id,
                          "amount": float(r.amount), "event_time": when, "predicted_at": when,
                          "model_name": champion.model_name, "model_version": champion.version,
                          "feature_service": champion.feature_service, "score": float(score),
                          "review": bool(score >= champion.threshold),
                          "features": {f: (None if v[i] != v[i] else float(v[i])) for f, v in columns.items()}}
                producer.send(topic, key=record["request_id"].encode(), value=orjson.dumps(record)) \
                    .add_errback(failures.append)
                if i % 1000 == 0:
                    bar.update(task, completed=i)
            producer.flush(timeout=120)
            bar.update(task, completed=len(frame))
    finally:
        producer.close(timeout=30)
    if failures:
        from skewless.errors import ServiceError

        raise ServiceError(f"{len(failures)} of {len(frame):,} prediction records were not acknowledged: "
                           f"{failures[0]}")
    landed = consume(settings, until_idle=3.0)
    return {"predictions": len(frame), "reviewed": int((scores >= champion.threshold).sum()),
            "model_version": champion.version, "landed": landed.get("topics", {}).get(topic, {}).get("valid", 0),
            "window": {"start": start.isoformat(), "end": end.isoformat()}}


def run_loop(settings: Settings, summary: dict[str, Any], drift_at: datetime, end: datetime, step) -> None:
    """Steps 15-18 of the demo (``step``: the demo's step printer)."""
    from cli.retrain import print_decision
    from monitoring.live_drift import check_drift
    from monitoring.report import monitor_report
    from skewless.features.store import feature_store
    from training.retrain import drift_gate, retrain

    live_start = max(drift_at, end - timedelta(days=LIVE_DAYS))
    console.rule("[bold]15. the loop: the champion's predictions after fraud changed")
    console.print(f"fraud changed on {drift_at:%Y-%m-%d} ({DRIFT_KIND}); the champion's predictions of "
                  f"{live_start:%Y-%m-%d} .. {end:%Y-%m-%d}, each transaction scored at its own time through its "
                  f"FeatureService, go to the predictions topic as serving sends them", highlight=False, soft_wrap=True)
    logged = step(None, lambda: log_champion_predictions(settings, live_start, end), "loop_predictions")
    console.print(f"{logged['predictions']:,} predictions by model version {logged['model_version']} "
                  f"({logged['reviewed']:,} sent to review), {logged['landed']:,} landed in the lake", highlight=False)

    check = step("16. monitor drift: those predictions against the champion's training set",
                 lambda: check_drift(settings, since=live_start, window=f"{(end - live_start).days}d", now=end),
                 "loop_drift")
    summary["loop_drift"] = {k: check[k] for k in ("drifted", "drifted_features", "predictions", "window",
                                                    "reference_run", "model_version", "saved")}
    if check["drifted"]:
        console.print(f"[red]drift[/red] in {', '.join(check['drifted_features'])} ({check['predictions']:,} "
                      f"predictions, {check['tests']} tests, Holm at alpha {check['alpha']})", highlight=False)
    else:
        console.print(f"[green]no drift[/green] flagged in {check['predictions']:,} predictions", highlight=False)

    def decide() -> dict[str, Any]:
        go, why = drift_gate(settings)
        if not go:
            return {"retrained": False, "promoted": False, "reason": why}
        with console.status("retraining ...") as status:
            return {"retrained": True, **retrain(settings, feature_store(settings), end, why,
                                                 on_step=lambda s: status.update(s))}

    decision = step("17. retrain --if-drift: challenger vs champion on one holdout",
                    decide, "loop_retrain")
    if decision["retrained"]:
        print_decision(decision)
        summary["loop_retrain"] = {k: decision[k] for k in (
            "retrained", "promoted", "reason", "trigger", "champion", "previous_champion", "challenger", "holdout",
            "decision", "run_id", "seconds")}
    else:
        console.print(f"not retraining: {decision['reason']}", highlight=False)

    out_dir = Path(settings.state_dir) / "report"
    report = step("18. monitor report --out DIR", lambda: monitor_report(settings, out_dir), "loop_report")
    console.print(f"report: {report['path']} ({report['bytes'] / 1024:,.0f} kB): open it in a browser",
                  highlight=False, soft_wrap=True)
