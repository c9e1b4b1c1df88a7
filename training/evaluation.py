"""Evaluation tied to the business: fraud metrics and the cost of a decision threshold.

A decision "flag" at threshold ``t`` sends a transaction to review when its score is at
least ``t``. Costs per transaction:

* a missed fraud (not flagged, fraud) costs its ``amount`` (the chargeback);
* a false alarm (flagged, legitimate) costs ``review_cost`` (an analyst's time);
* a caught fraud costs ``review_cost`` too (it was reviewed), but saves the amount.

The threshold is chosen on validation data to minimise the total cost, then reported
on test data, never chosen there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from skewless.cost import decisions_cost


@dataclass(frozen=True)
class CostReport:
    threshold: float
    cost: float
    cost_no_model: float  # flag nothing: every fraud is a chargeback
    flagged: int
    caught_fraud: int
    missed_fraud: int
    false_alarms: int

    @property
    def savings(self) -> float:
        return self.cost_no_model - self.cost


def decision_cost(y: np.ndarray, scores: np.ndarray, amounts: np.ndarray, threshold: float, review_cost: float) -> CostReport:
    y = np.asarray(y, dtype=bool)
    flag = np.asarray(scores) >= threshold
    amounts = np.asarray(amounts, dtype=float)
    missed = y & ~flag
    false_alarm = flag & ~y
    caught = flag & y
    cost = decisions_cost(y, flag, amounts, review_cost)
    return CostReport(
        threshold=float(threshold), cost=float(cost), cost_no_model=float(amounts[y].sum()),
        flagged=int(flag.sum()), caught_fraud=int(caught.sum()), missed_fraud=int(missed.sum()),
        false_alarms=int(false_alarm.sum()),
    )


def best_threshold(y: np.ndarray, scores: np.ndarray, amounts: np.ndarray, review_cost: float) -> CostReport:
    """The threshold with the lowest total cost, searched over every distinct score."""
    y = np.asarray(y, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    amounts = np.asarray(amounts, dtype=float)
    order = np.argsort(-scores, kind="stable")
    s, yy, a = scores[order], y[order], amounts[order]
    # Flagging the top-k: cost(k) = review_cost*k + (fraud amount not in the top k).
    fraud_amount = np.where(yy, a, 0.0)
    total_fraud = fraud_amount.sum()
    k = np.arange(1, len(s) + 1)
    cost_k = review_cost * k + (total_fraud - np.cumsum(fraud_amount))
    # Only cut where the score changes (ties are flagged together).
    valid = np.r_[s[1:] != s[:-1], True]
    candidates = np.flatnonzero(valid)
    best = candidates[np.argmin(cost_k[candidates])] if len(candidates) else None
    if best is None or cost_k[best] >= total_fraud:
        return decision_cost(y, scores, amounts, np.inf, review_cost)  # flag nothing
    return decision_cost(y, scores, amounts, float(s[best]), review_cost)


def recall_at_precision(y: np.ndarray, scores: np.ndarray, precision: float) -> float:
    p, r, _ = precision_recall_curve(y, scores)
    ok = p >= precision
    return float(r[ok].max()) if ok.any() else 0.0


def evaluate(y, scores, amounts, threshold: float, review_cost: float, target_precision: float) -> dict:
    """All metrics for one model on one split, at a threshold chosen elsewhere."""
    y = np.asarray(y, dtype=bool)
    has_both = 0 < y.sum() < len(y)
    cost = decision_cost(y, scores, amounts, threshold, review_cost)
    return {
        "rows": int(len(y)),
        "fraud": int(y.sum()),
        "pr_auc": float(average_precision_score(y, scores)) if has_both else float("nan"),
        "roc_auc": float(roc_auc_score(y, scores)) if has_both else float("nan"),
        f"recall_at_p{int(target_precision * 100)}": recall_at_precision(y, scores, target_precision) if has_both else float("nan"),
        "cost": cost.cost,
        "cost_no_model": cost.cost_no_model,
        "savings": cost.savings,
        **{k: v for k, v in asdict(cost).items() if k not in ("cost", "cost_no_model")},
    }
