"""The retraining decision rule (``training.promotion``): paired, card-clustered bootstrap of
the cost difference and the margin, on synthetic per-transaction costs."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluation import decision_cost
from training.promotion import bootstrap_sums, decide, mean_interval, row_costs


def test_row_costs_sum_to_the_decision_cost():
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.05
    scores, amounts = rng.random(500), rng.uniform(1, 500, 500)
    costs = row_costs(y, scores, amounts, 0.7, 5.0)
    assert costs.sum() == pytest.approx(decision_cost(y, scores, amounts, 0.7, 5.0).cost)
    # Flagged: the review; missed fraud: its amount; a legitimate one let through: nothing.
    flagged = scores >= 0.7
    assert (costs[flagged] == 5.0).all() and (costs[~flagged & y] == amounts[~flagged & y]).all()
    assert (costs[~flagged & ~y] == 0).all()


def _costs(n: int, seed: int, fraud_rate: float = 0.02):
    """Per-transaction costs of a champion: mostly 0, reviews at 5, the odd missed fraud at its amount."""
    rng = np.random.default_rng(seed)
    base = np.where(rng.random(n) < 0.05, 5.0, 0.0)
    missed = rng.random(n) < fraud_rate
    return np.where(missed, rng.uniform(50, 800, n), base), rng


def test_a_clear_win_is_promoted():
    champion, rng = _costs(20_000, 1)
    challenger = champion.copy()
    # The challenger catches 40% of the missed frauds (a review instead of the chargeback).
    missed = np.flatnonzero(champion > 5)
    caught = rng.choice(missed, size=int(0.4 * len(missed)), replace=False)
    challenger[caught] = 5.0
    d = decide(champion, challenger, margin=0.02, resamples=1000, seed=0)
    assert d.promote, d.reason
    assert d.relative > 0.2 and d.difference_ci[0] > 0 and d.difference_ci[0] < d.difference < d.difference_ci[1]
    assert d.rows == d.clusters == 20_000
    assert d.challenger_cost_ci[0] < d.challenger_cost < d.challenger_cost_ci[1]


def test_the_same_model_is_not_promoted():
    champion, _ = _costs(5_000, 2)
    d = decide(champion, champion.copy(), margin=0.0, resamples=500)
    assert not d.promote and d.difference == 0 and d.difference_ci == (0.0, 0.0)
    assert "margin" in d.reason


def test_a_mean_win_whose_interval_includes_zero_is_not_promoted():
    """The challenger is cheaper on average — by more than the margin — but the whole saving is a
    few transactions; the paired interval reaches below zero, so the champion stays."""
    champion, _ = _costs(3_000, 3)
    challenger = champion.copy()
    # It catches three frauds of 1,000 the champion missed, and misses two the champion caught.
    champion[:3], challenger[:3] = 1_005.0, 5.0
    champion[3:5], challenger[3:5] = 5.0, 1_005.0
    d = decide(champion, challenger, margin=0.02, resamples=1000, seed=0)
    assert d.relative >= 0.02, d  # the mean wins by the margin...
    assert d.difference_ci[0] <= 0 < d.difference_ci[1]  # ...but not clearly
    assert not d.promote and "includes zero" in d.reason


def test_a_win_smaller_than_the_margin_is_not_promoted_even_if_certain():
    champion, _ = _costs(20_000, 4)
    challenger = champion * 0.99  # 1% cheaper on every transaction: certain, but small
    d = decide(champion, challenger, margin=0.02, resamples=500)
    assert d.difference_ci[0] > 0 and 0.009 < d.relative < 0.011
    assert not d.promote and "margin" in d.reason
    assert decide(champion, challenger, margin=0.005, resamples=500).promote


def test_a_worse_challenger_is_not_promoted():
    champion, _ = _costs(5_000, 5)
    d = decide(champion, champion + 1.0, margin=0.0, resamples=300)
    assert not d.promote and d.difference == pytest.approx(-1.0) and d.difference_ci[1] < 0


def test_clustering_by_card_widens_the_interval_of_bursty_costs():
    """Each card's costs move together (a burst): resampling rows as if independent understates
    the uncertainty that resampling cards shows."""
    rng = np.random.default_rng(6)
    cards = np.repeat(np.arange(300), 20)
    per_card = rng.normal(0, 10, 300)
    values = per_card[cards] + rng.normal(0, 1, len(cards))
    lo_rows, hi_rows = mean_interval(values, None, resamples=800, seed=1)
    lo_cards, hi_cards = mean_interval(values, cards, resamples=800, seed=1)
    assert (hi_cards - lo_cards) > 3 * (hi_rows - lo_rows)


def test_the_bootstrap_is_paired():
    """Two models whose costs differ by a constant on every row: noisy costs, a certain
    difference — an unpaired comparison of the two intervals would see overlap."""
    champion, _ = _costs(2_000, 7)
    challenger = champion - 0.5
    d = decide(champion, challenger, margin=0.0, resamples=300)
    assert d.difference_ci == pytest.approx((0.5, 0.5))
    assert d.challenger_cost_ci[1] > d.champion_cost_ci[0]  # the marginal intervals overlap
    assert d.promote


def test_bootstrap_is_seeded_and_counts_rows():
    values = np.arange(10.0)
    a = bootstrap_sums(values, ["a"] * 5 + ["b"] * 5, 50, seed=3)
    b = bootstrap_sums(values, ["a"] * 5 + ["b"] * 5, 50, seed=3)
    assert np.array_equal(a[0], b[0]) and set(np.unique(a[1])) <= {10.0}  # two cards of 5 rows each, 2 drawn
    assert set(np.unique(a[0][:, 0])) <= {20.0, 45.0, 70.0}  # a+a (10 each), a+b, b+b (35 each)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="one length"):
        decide([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="no holdout rows"):
        decide([], [])
