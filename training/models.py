"""The candidate models: a gradient-boosted model on all features, and two baselines.

* ``hgb`` — HistGradientBoostingClassifier on every feature of the FeatureService;
* ``logreg`` — the simple baseline: logistic regression on the same features;
* ``hgb_no_windows`` — the same booster on request-time features only (no windowed
  aggregates), to show what the feature store's windows are worth.

All take a numeric matrix in the FeatureService's feature order; missing values (an
entity the store has not seen) are NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.model_selection import TimeSeriesSplit
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


@dataclass
class Candidate:
    name: str
    pipeline: Pipeline
    features: list[str]
    description: str


def booster(seed: int) -> Pipeline:
    # A sentinel for "missing" (an entity the store has not seen): trees split on it like
    # on NaN, and a column that is entirely missing in an early fold cannot break binning.
    return make_pipeline(SimpleImputer(strategy="constant", fill_value=-1.0, keep_empty_features=True),
                         HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.05, max_leaf_nodes=31, min_samples_leaf=40, l2_regularization=1.0,
        early_stopping=False, random_state=seed,
    ))


def logistic(seed: int) -> Pipeline:
    return make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(),
        LogisticRegression(max_iter=2000, C=1.0, random_state=seed),
    )


def candidates(features: list[str], request_features: list[str], seed: int = 0) -> list[Candidate]:
    out = [
        Candidate("hgb", booster(seed), list(features), "gradient boosting, all features"),
        Candidate("logreg", logistic(seed), list(features), "baseline: logistic regression, all features"),
    ]
    if request_features:
        out.append(Candidate("hgb_no_windows", booster(seed), list(request_features),
                             "gradient boosting, request-time features only (no windows)"))
    return out


def matrix(df: pd.DataFrame, features: list[str]) -> np.ndarray:
    """The model's input: the features in order, as floats (booleans -> 0/1, None -> NaN)."""
    return df[features].apply(pd.to_numeric, errors="coerce").astype("float64").to_numpy()


def time_cv_pr_auc(pipeline: Pipeline, X: np.ndarray, y: np.ndarray, splits: int = 3) -> list[float]:
    """PR-AUC on each fold of a time-series split (rows must be in time order)."""
    scores = []
    for train_idx, test_idx in TimeSeriesSplit(n_splits=splits).split(X):
        if y[train_idx].sum() < 2 or y[test_idx].sum() < 1:
            continue
        model = clone(pipeline).fit(X[train_idx], y[train_idx])
        scores.append(float(average_precision_score(y[test_idx], model.predict_proba(X[test_idx])[:, 1])))
    return scores


def time_split(df: pd.DataFrame, time_col: str, fractions=(0.6, 0.2, 0.2)) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train on the earliest rows, validate on the next, test on the latest."""
    df = df.sort_values(time_col, kind="stable").reset_index(drop=True)
    n = len(df)
    a = int(n * fractions[0])
    b = int(n * (fractions[0] + fractions[1]))
    return df.iloc[:a], df.iloc[a:b], df.iloc[b:]
