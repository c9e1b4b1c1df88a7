import numpy as np
import pytest

from training.evaluation import best_threshold, decision_cost, evaluate, recall_at_precision


def brute_force_best(y, s, a, review):
    best = None
    for t in sorted(set(s)) + [np.inf]:
        c = decision_cost(y, s, a, t, review).cost
        if best is None or c < best[1]:
            best = (t, c)
    return best


def test_cost_counts_missed_amounts_and_reviews():
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.1, 0.0])
    a = np.array([100.0, 10.0, 50.0, 5.0])
    r = decision_cost(y, s, a, 0.5, review_cost=2.0)
    assert r.flagged == 2 and r.caught_fraud == 1 and r.false_alarms == 1 and r.missed_fraud == 1
    assert r.cost == pytest.approx(50.0 + 2 * 2.0)
    assert r.cost_no_model == pytest.approx(150.0)


@pytest.mark.parametrize("seed", range(5))
def test_best_threshold_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 300
    y = rng.random(n) < 0.05
    s = np.round(np.where(y, rng.beta(4, 2, n), rng.beta(2, 4, n)), 2)  # ties on purpose
    a = rng.lognormal(3, 1, n)
    got = best_threshold(y, s, a, review_cost=5.0)
    t, c = brute_force_best(y, s, a, 5.0)
    assert got.cost == pytest.approx(c)


def test_flag_nothing_when_reviews_cost_more_than_fraud():
    y = np.array([1, 0, 0])
    r = best_threshold(y, np.array([0.2, 0.9, 0.8]), np.array([1.0, 1.0, 1.0]), review_cost=100.0)
    assert r.flagged == 0 and r.cost == pytest.approx(1.0)


def test_recall_at_precision_and_evaluate():
    y = np.array([1, 1, 0, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    assert recall_at_precision(y, s, 1.0) == pytest.approx(2 / 3)
    m = evaluate(y, s, np.ones(6), threshold=0.75, review_cost=1.0, target_precision=0.9)
    assert m["recall_at_p90"] == pytest.approx(2 / 3)
    assert 0.5 < m["roc_auc"] <= 1.0 and m["rows"] == 6 and m["fraud"] == 3
