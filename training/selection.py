"""Choosing the model and its decision threshold without the test split.

The rows are split by time: train < validation < test. Every choice is made on the
first two:

* each candidate is fitted on train (and cross-validated on train, time-ordered, for
  information);
* its decision threshold is the one with the lowest cost on validation
  (``training.evaluation.best_threshold``);
* the model is the choosable candidate with the highest **validation** PR-AUC (ties:
  the lower validation cost at its own threshold, then the first listed).

``fit_and_choose`` takes no test rows, so it cannot look at them. Only then does
``report_on_test`` score the test split, once, at the thresholds already chosen: the
chosen model's test figures are an unbiased estimate, and the other candidates' are
there for comparison, not used for choosing. (Choosing on test, as ``train`` once did,
reports the best of several noisy test figures: biased upward.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from skewless.errors import ConfigError
from training.evaluation import best_threshold, evaluate
from training.models import Candidate, matrix, time_cv_pr_auc

SELECTED_ON = "validation"  # the split every choice is made on
SELECTION_METRIC = "pr_auc"
# The candidates that may be served; the others are baselines (e.g. no windowed features).
CHOOSABLE = ("hgb", "logreg")
# The validation metrics carried into the results (prefixed ``val_``), beside the test ones.
VALIDATION_KEYS = ("pr_auc", "roc_auc", "cost", "savings")


@dataclass
class Fitted:
    candidate: Candidate
    model: Any
    threshold: float  # lowest cost on validation
    validation: dict[str, Any]  # ``evaluate`` on validation at ``threshold``
    cv_pr_auc: list[float] = field(default_factory=list)  # time-ordered CV folds on train


@dataclass
class Selection:
    chosen: str
    fitted: dict[str, Fitted]
    eligible: tuple[str, ...]
    split: str = SELECTED_ON
    metric: str = SELECTION_METRIC


def choose(validation: Mapping[str, Mapping[str, float]], eligible: Sequence[str]) -> str:
    """The eligible candidate with the highest validation PR-AUC (NaN counts as lowest);
    ties go to the lower validation cost, then to the first listed."""
    names = [n for n in eligible if n in validation]
    if not names:
        raise ConfigError(f"no choosable candidate among {sorted(validation)} (choosable: {list(eligible)})")

    def key(item: tuple[int, str]) -> tuple[float, float, int]:
        i, name = item
        auc = validation[name][SELECTION_METRIC]
        return (-auc if not math.isnan(auc) else math.inf, validation[name]["cost"], i)

    return min(enumerate(names), key=key)[1]


def fit_and_choose(cands: Sequence[Candidate], train_df: pd.DataFrame, val_df: pd.DataFrame, review_cost: float,
                   target_precision: float, eligible: Sequence[str] = CHOOSABLE,
                   on_step: Callable[[str], None] = lambda s: None) -> Selection:
    """Fit every candidate on train, choose its threshold by cost on validation, and choose
    the model on validation. Sees train and validation only (no test rows are passed in)."""
    y_tr, y_val, a_val = train_df["label"].to_numpy(), val_df["label"].to_numpy(), val_df["amount"].to_numpy()
    fitted: dict[str, Fitted] = {}
    for cand in cands:
        on_step(f"fitting {cand.name}: {cand.description}")
        X_tr = matrix(train_df, cand.features)
        cv = time_cv_pr_auc(cand.pipeline, X_tr, y_tr)
        model = cand.pipeline.fit(X_tr, y_tr)
        s_val = model.predict_proba(matrix(val_df, cand.features))[:, 1]
        threshold = best_threshold(y_val, s_val, a_val, review_cost).threshold
        fitted[cand.name] = Fitted(cand, model, threshold,
                                   evaluate(y_val, s_val, a_val, threshold, review_cost, target_precision), cv)
    chosen = choose({n: f.validation for n, f in fitted.items()}, eligible)
    return Selection(chosen, fitted, tuple(n for n in eligible if n in fitted))


def report_on_test(selection: Selection, test_df: pd.DataFrame, review_cost: float,
                   target_precision: float) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Every candidate on the test split at its validation-chosen threshold (the choice is
    already made): per candidate the test metrics (unprefixed), its validation figures
    (``val_``), the CV mean on train and the threshold; and the
    test labels and scores for the PR curve."""
    y, amounts = test_df["label"].to_numpy(), test_df["amount"].to_numpy()
    results: dict[str, dict[str, Any]] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, f in selection.fitted.items():
        scores = f.model.predict_proba(matrix(test_df, f.candidate.features))[:, 1]
        results[name] = {
            "description": f.candidate.description, "features": len(f.candidate.features),
            **evaluate(y, scores, amounts, f.threshold, review_cost, target_precision),
            **{f"val_{k}": f.validation[k] for k in VALIDATION_KEYS},
            "cv_pr_auc_mean": float(np.mean(f.cv_pr_auc)) if f.cv_pr_auc else float("nan"),
            "threshold": f.threshold,
        }
        curves[name] = (y, scores)
    return results, curves
