"""The business cost of fraud decisions, one rule for training's threshold choice, the
retrain decision and what monitoring measures on labelled predictions: a missed fraud
costs its amount, every flagged transaction costs one review (``training.review_cost``)."""

from __future__ import annotations

import numpy as np


def row_costs(is_fraud: np.ndarray, flagged: np.ndarray, amounts: np.ndarray, review_cost: float) -> np.ndarray:
    """Each transaction's cost: ``review_cost`` when flagged, its amount when a fraud is
    not flagged, else 0."""
    is_fraud, flagged = np.asarray(is_fraud, dtype=bool), np.asarray(flagged, dtype=bool)
    amounts = np.asarray(amounts, dtype=float)
    return np.where(flagged, float(review_cost), np.where(is_fraud, amounts, 0.0))


def decisions_cost(is_fraud: np.ndarray, flagged: np.ndarray, amounts: np.ndarray, review_cost: float) -> float:
    return float(row_costs(is_fraud, flagged, amounts, review_cost).sum())
