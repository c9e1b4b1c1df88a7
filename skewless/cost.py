"""The business cost of fraud decisions, one rule for training's threshold choice and for
what monitoring measures on labelled predictions: a missed fraud costs its amount, every
flagged transaction costs one review (``training.review_cost``)."""

from __future__ import annotations

import numpy as np


def decisions_cost(is_fraud: np.ndarray, flagged: np.ndarray, amounts: np.ndarray, review_cost: float) -> float:
    is_fraud, flagged = np.asarray(is_fraud, dtype=bool), np.asarray(flagged, dtype=bool)
    amounts = np.asarray(amounts, dtype=float)
    return float(amounts[is_fraud & ~flagged].sum() + review_cost * flagged.sum())
