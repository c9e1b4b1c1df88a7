"""Should the challenger replace the champion? The decision rule of ``skewless retrain``.

Both models score the **same** holdout rows, each at its own threshold (chosen on its own
validation split), so every transaction has two costs (``row_costs``: its amount when a
fraud is missed, ``review_cost`` when flagged — ``training.evaluation``'s cost, row by
row). The difference ``champion - challenger`` per transaction is what the decision is
about; its mean is the expected saving per transaction.

The challenger is promoted only when both hold:

* it **wins by the margin**: its expected cost is at most ``(1 - margin)`` times the
  champion's (``retrain.margin``, a fraction of the champion's cost);
* the **paired bootstrap interval** of the mean difference (``retrain.confidence``,
  ``retrain.bootstrap`` resamples) lies **above zero**.

A mean that wins by the margin on a few lucky transactions has an interval reaching below
zero, and is not promoted. The bootstrap is paired (a resample takes both models' costs of
the same transactions) and clustered by card (``user_id``): fraud arrives in bursts on one
card, so a card's transactions are resampled together rather than as independent rows,
which would make the interval too narrow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from skewless import cost

CHUNK = 100  # resamples drawn at a time (bounds memory at CHUNK x clusters weights)


def row_costs(y: Sequence[int], scores: Sequence[float], amounts: Sequence[float], threshold: float,
              review_cost: float) -> np.ndarray:
    """Each transaction's cost under the decision ``score >= threshold`` (``skewless.cost``)."""
    return cost.row_costs(y, np.asarray(scores, dtype=float) >= threshold, amounts, review_cost)


def _clusters(n: int, groups: Sequence[Any] | None) -> np.ndarray:
    if groups is None:
        return np.arange(n)
    codes, _ = pd.factorize(pd.Series(groups), use_na_sentinel=False)
    if len(codes) != n:
        raise ValueError(f"{len(codes)} groups for {n} rows")
    return codes


def bootstrap_sums(values: np.ndarray, groups: Sequence[Any] | None, resamples: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster bootstrap: per resample, the resampled sum of each column of ``values`` (rows x
    columns) and the resampled row count; clusters (``groups``; default: each row its own) are
    drawn with replacement, as many as there are."""
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    codes = _clusters(len(values), groups)
    k = int(codes.max()) + 1 if len(codes) else 0
    if k == 0:
        raise ValueError("nothing to resample: no rows")
    sums = np.stack([np.bincount(codes, weights=values[:, j], minlength=k) for j in range(values.shape[1])], axis=1)
    counts = np.bincount(codes, minlength=k).astype(float)
    rng = np.random.default_rng(seed)
    out_sums, out_counts = [], []
    p = np.full(k, 1.0 / k)
    for start in range(0, resamples, CHUNK):
        w = rng.multinomial(k, p, size=min(CHUNK, resamples - start)).astype(float)
        out_sums.append(w @ sums)
        out_counts.append(w @ counts)
    return np.concatenate(out_sums), np.concatenate(out_counts)


def mean_interval(values: Sequence[float], groups: Sequence[Any] | None = None, resamples: int = 1000,
                  confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` (cluster bootstrap)."""
    sums, counts = bootstrap_sums(np.asarray(values, dtype=float), groups, resamples, seed)
    return _percentiles(sums[:, 0] / counts, confidence)


def total_interval(values: Sequence[float], groups: Sequence[Any] | None = None, resamples: int = 1000,
                   confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the total of ``values`` (cluster bootstrap: e.g. a split's cost)."""
    sums, _ = bootstrap_sums(np.asarray(values, dtype=float), groups, resamples, seed)
    return _percentiles(sums[:, 0], confidence)


def _percentiles(stat: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(stat, [tail, 1.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    rows: int
    clusters: int
    champion_cost: float  # expected cost per transaction on the holdout
    challenger_cost: float
    champion_cost_ci: tuple[float, float]
    challenger_cost_ci: tuple[float, float]
    difference: float  # champion - challenger per transaction: > 0 means the challenger is cheaper
    difference_ci: tuple[float, float]  # paired bootstrap interval of ``difference``
    relative: float  # difference / champion_cost (0 when the champion costs nothing)
    margin: float
    confidence: float
    resamples: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(champion: Sequence[float], challenger: Sequence[float], groups: Sequence[Any] | None = None,
           margin: float = 0.02, resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> Decision:
    """The rule of the module docstring over two cost vectors of the same transactions."""
    a = np.asarray(champion, dtype=float)
    b = np.asarray(challenger, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired costs need two vectors of one length, got {a.shape} and {b.shape}")
    if len(a) == 0:
        raise ValueError("no holdout rows to compare the models on")
    sums, counts = bootstrap_sums(np.stack([a, b, a - b], axis=1), groups, resamples, seed)
    means = sums / counts[:, None]
    ci = [_percentiles(means[:, j], confidence) for j in range(3)]
    ca, cb = float(a.mean()), float(b.mean())
    diff = ca - cb
    relative = diff / ca if ca > 0 else 0.0
    low, high = ci[2]
    level = f"{confidence:.0%}"
    if relative < margin:
        reason = (f"challenger does not win by the margin: expected cost {cb:.4g} vs champion {ca:.4g} per "
                  f"transaction ({relative:+.1%}, margin {margin:.1%})")
        promote = False
    elif low <= 0:
        reason = (f"challenger wins by {relative:.1%} (margin {margin:.1%}) but the {level} bootstrap interval of "
                  f"the saving per transaction [{low:.4g}, {high:.4g}] includes zero")
        promote = False
    else:
        reason = (f"challenger cheaper by {relative:.1%} (margin {margin:.1%}), saving {diff:.4g} per transaction, "
                  f"{level} interval [{low:.4g}, {high:.4g}] clear of zero")
        promote = True
    return Decision(promote=promote, reason=reason, rows=len(a), clusters=int(_clusters(len(a), groups).max()) + 1,
                    champion_cost=ca, challenger_cost=cb, champion_cost_ci=ci[0], challenger_cost_ci=ci[1],
                    difference=diff, difference_ci=ci[2], relative=relative, margin=margin, confidence=confidence,
                    resamples=resamples)
