"""Realised performance: the logged predictions whose chargebacks had time to arrive,
scored against the labels that did — PR-AUC, recall, review rate and the business cost of
the decisions actually taken (``skewless.cost``), per model version.

A prediction is *mature* once ``training.label_maturity_days`` have passed since its
transaction: the same rule training uses, so a transaction with no chargeback by then
counts as legitimate (a later chargeback would make it fraud; the figures say how many
predictions are still too young to count). Labels are the ``labels`` topic in the lake
(``is_fraud`` per transaction, the latest by ``label_time`` known at ``now``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from monitoring.predictions import landed_predictions
from skewless.contracts import LABELS
from skewless.cost import decisions_cost
from skewless.lake import read_events
from skewless.settings import Settings

COLUMNS = ["request_id", "transaction_id", "amount", "event_time", "predicted_at", "model_version", "score", "review"]


def _labels(settings: Settings, now: datetime) -> pd.DataFrame:
    table = read_events(settings.lake_path, settings.topics.labels, "label_time", end=now,
                        columns=["transaction_id", "is_fraud", "label_time"], contract=LABELS)
    if table.num_columns == 0 or table.num_rows == 0:
        return pd.DataFrame({"transaction_id": pd.Series([], dtype=object), "is_fraud": pd.Series([], dtype=bool)})
    frame = table.to_pandas().sort_values("label_time", kind="stable")
    return frame.drop_duplicates("transaction_id", keep="last")[["transaction_id", "is_fraud"]]


def _figures(part: pd.DataFrame, review_cost: float) -> dict[str, Any]:
    y = part["is_fraud"].to_numpy(dtype=bool)
    flagged = part["review"].to_numpy(dtype=bool)
    amounts = part["amount"].to_numpy(dtype=float)
    frauds = int(y.sum())
    cost = decisions_cost(y, flagged, amounts, review_cost)
    no_model = decisions_cost(y, np.zeros_like(flagged), amounts, review_cost)
    return {
        "predictions": int(len(part)), "frauds": frauds,
        # PR-AUC needs both classes: None (not 0) when the window has no fraud or only fraud
        "pr_auc": float(average_precision_score(y, part["score"].to_numpy(dtype=float))) if 0 < frauds < len(y) else None,
        "recall": float((y & flagged).sum() / frauds) if frauds else None,
        "review_rate": float(flagged.mean()) if len(part) else None,
        "cost": round(cost, 2), "cost_per_prediction": round(cost / len(part), 4) if len(part) else None,
        "cost_without_model": round(no_model, 2), "savings": round(no_model - cost, 2),
    }


def realised_performance(settings: Settings, since: datetime | None = None, until: datetime | None = None,
                         now: datetime | None = None) -> dict[str, Any]:
    """The mature logged predictions with ``predicted_at`` in ``[since, until)`` against
    the labels known at ``now`` (default: the current time); overall and per model version."""
    now = now or datetime.now(timezone.utc)
    preds, duplicates = landed_predictions(settings, COLUMNS, since, until)
    mature_before = now - timedelta(days=settings.training.label_maturity_days)
    event_time = pd.to_datetime(preds["event_time"], utc=True)
    mature = preds[event_time <= pd.Timestamp(mature_before)]
    labelled = mature.merge(_labels(settings, now), on="transaction_id", how="left")
    labelled["is_fraud"] = labelled["is_fraud"].fillna(False).astype(bool)
    review_cost = settings.training.review_cost
    return {
        "now": now.isoformat(), "mature_before": mature_before.isoformat(),
        "label_maturity_days": settings.training.label_maturity_days,
        "predictions": int(len(preds)), "too_young": int(len(preds) - len(mature)),
        "duplicate_copies_dropped": duplicates, "review_cost": review_cost,
        "overall": _figures(labelled, review_cost),
        "by_model_version": {str(v): _figures(part, review_cost)
                             for v, part in labelled.groupby("model_version", sort=True)},
    }
