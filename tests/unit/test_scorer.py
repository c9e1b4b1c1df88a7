"""The compiled scorer gives scikit-learn's ``predict_proba`` — within 1e-9, absolute and
relative — on every input serving can send, and scikit-learn's own answer or error on the
rest (``serving.scorer``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from serving import scorer as scorer_mod
from serving.scorer import Scorer, build_scorer, compile_model, probe_rows
from training.models import booster, logistic

F = 8


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """scikit-learn's OpenMP pool spin-waits on a busy machine; one thread, as serving runs it."""
    import sklearn.ensemble._hist_gradient_boosting._predictor  # noqa: F401 - loads the OpenMP runtime
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def _data(n: int = 3000, seed: int = 0, nan_rate: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, F))
    X[:, 3] = rng.integers(0, 5, size=n)  # few distinct values: thresholds between integers
    X[:, 5] = rng.exponential(100.0, size=n)
    X[rng.random(X.shape) < nan_rate] = np.nan
    X[:, 7] = rng.normal(size=n)  # never missing in training: NaN at predict time goes where sklearn says
    z = np.nan_to_num(X[:, 0]) - 0.8 * np.nan_to_num(X[:, 1], nan=2.0) + 0.3 * X[:, 3] + 0.5 * X[:, 7]
    z += np.isnan(X[:, 2]) * 1.5 + rng.normal(scale=0.8, size=n)
    return X, (z > 0.8).astype(int)


def _thresholds(model) -> dict[int, list[float]]:
    if model is None:
        return {}
    last = model.steps[-1][1] if hasattr(model, "steps") else model
    out: dict[int, list[float]] = {}
    for (tree,) in last._predictors:
        split = tree.nodes[tree.nodes["is_leaf"] == 0]
        for j, t in zip(split["feature_idx"].tolist(), split["num_threshold"].tolist()):
            out.setdefault(j, []).append(t)
    return out


def _hard_rows(model, n: int = 600, seed: int = 1, inf: bool = True) -> np.ndarray:
    """Rows made to hit the edges: values exactly on a split threshold of ``model`` (trees) and
    one ulp either side, NaN, all-NaN rows, +-inf (when ``inf``), and ordinary values."""
    rng = np.random.default_rng(seed)
    X, _ = _data(n, seed=seed, nan_rate=0.3)
    for j, ts in _thresholds(model).items():
        finite = [t for t in ts if math.isfinite(t)]
        if not finite:
            continue
        on = rng.choice(finite, size=n)
        side = rng.integers(0, 3, size=n)
        vals = np.where(side == 0, on, np.where(side == 1, np.nextafter(on, -np.inf), np.nextafter(on, np.inf)))
        pick = rng.random(n) < 0.5
        X[pick, j] = vals[pick]
    X[:20] = np.nan  # all-NaN rows
    if inf:
        X[20:40, rng.integers(0, F, 20)] = np.inf
        X[40:60, rng.integers(0, F, 20)] = -np.inf
        X[60, :] = np.inf
        X[61, :] = -np.inf
    return X


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def _check(model, X: np.ndarray) -> Scorer:
    s = build_scorer(model)
    assert s.compiled, s.description
    want = model.predict_proba(X)[:, 1]
    assert_same(s(X), want)  # a batch
    for i in range(0, len(X), 7):  # one row at a time, as /v1/predict scores
        assert_same(s(X[i:i + 1]), model.predict_proba(X[i:i + 1])[:, 1])
    return s


def test_boosted_trees_with_nan_inf_and_values_on_thresholds():
    X, y = _data()
    model = HistGradientBoostingClassifier(max_iter=60, max_leaf_nodes=31, random_state=0).fit(X, y)
    assert model.n_iter_ == 60
    s = _check(model, _hard_rows(model))
    assert s.description.startswith("numpy trees (60 trees")


def test_nan_at_predict_time_in_a_feature_never_missing_in_training():
    X, y = _data()
    model = HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(X, y)
    rows, _ = _data(400, seed=5, nan_rate=0.0)
    rows[::2, 7] = np.nan
    _check(model, rows)


def test_early_stopped_model():
    X, y = _data(4000)
    model = HistGradientBoostingClassifier(max_iter=500, early_stopping=True, n_iter_no_change=3,
                                           validation_fraction=0.2, random_state=0).fit(X, y)
    assert model.n_iter_ < 500
    _check(model, _hard_rows(model))


def test_many_iterations_and_deep_trees():
    X, y = _data(4000)
    model = HistGradientBoostingClassifier(max_iter=400, max_leaf_nodes=63, min_samples_leaf=5, learning_rate=0.3,
                                           early_stopping=False, random_state=0).fit(X, y)
    s = _check(model, _hard_rows(model))
    assert "400 trees" in s.description


def test_the_trainers_booster_pipeline_and_its_inf_error():
    X, y = _data()
    model = booster(0).fit(X, y)
    _check(model, _hard_rows(model, inf=False))
    bad = _hard_rows(model)[15:25]  # inf: the imputer rejects it, so must the scorer, the same way
    with pytest.raises(ValueError) as sk:
        model.predict_proba(bad)
    with pytest.raises(ValueError) as ours:
        build_scorer(model)(bad)
    assert str(ours.value) == str(sk.value)


def test_the_trainers_logistic_pipeline():
    X, y = _data()
    model = logistic(0).fit(X, y)
    s = _check(model, _hard_rows(None, inf=False))
    assert s.description.startswith("numpy logistic regression")
    with pytest.raises(ValueError):
        s(np.full((1, F), np.inf))


def test_a_bare_logistic_regression_leaves_nan_to_scikit_learn():
    X, y = _data(nan_rate=0.0)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    s = build_scorer(model)
    assert s.compiled
    assert_same(s(X[:50]), model.predict_proba(X[:50])[:, 1])
    with pytest.raises(ValueError, match="NaN"):
        s(np.full((1, F), np.nan))


@pytest.mark.parametrize("make", [
    lambda: RandomForestClassifier(n_estimators=5, random_state=0),
    lambda: HistGradientBoostingClassifier(max_iter=10, categorical_features=[3], random_state=0),
    lambda: make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=5, random_state=0)),
])
def test_other_models_are_scored_by_scikit_learn(make):
    X, y = _data(nan_rate=0.0)
    X[:, 3] = np.abs(X[:, 3])
    model = make().fit(X, y)
    s = build_scorer(model)
    assert not s.compiled and s.description.startswith("scikit-learn predict_proba")
    assert np.array_equal(s(X[:30]), model.predict_proba(X[:30])[:, 1])


def test_multiclass_is_scored_by_scikit_learn():
    X, y = _data(nan_rate=0.0)
    y3 = y + (X[:, 0] > 1)
    model = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(X, y3)
    s = build_scorer(model)
    assert not s.compiled and "binary" in s.description
    assert np.array_equal(s(X[:10]), model.predict_proba(X[:10])[:, 1])


def test_wrong_shape_gets_scikit_learns_error():
    X, y = _data()
    model = booster(0).fit(X, y)
    s = build_scorer(model)
    with pytest.raises(ValueError, match="features"):
        s(np.zeros((1, F + 1)))


def test_guard_is_entered_only_for_scikit_learns_own_call():
    X, y = _data()
    model = booster(0).fit(X, y)
    s = build_scorer(model)
    entered = []

    class Guard:
        def __enter__(self):
            entered.append(1)

        def __exit__(self, *exc):
            return False

    s(X[:1], guard=Guard)
    assert entered == []
    with pytest.raises(ValueError):
        s(np.full((1, F), np.inf), guard=Guard)
    assert entered == [1]


@pytest.mark.parametrize("bug", ["missing", "threshold", "order"])
def test_a_wrong_traversal_is_caught_and_scikit_learn_kept(monkeypatch, bug):
    """The probe rows catch a traversal that routes NaN the wrong way, compares with < instead
    of <=, or loses a tree: the model is then scored by scikit-learn."""
    X, y = _data()
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, y)
    real = scorer_mod._forest

    def broken(m):
        forest = real(m)
        col, thr, child = forest.col.copy(), forest.thr.copy(), forest.child.copy()
        split = child != np.arange(len(child))
        if bug == "missing":  # send missing values the other way
            col[split] = np.where(col[split] < F, col[split] + F, col[split] - F)
        elif bug == "threshold":  # x < t instead of x <= t
            thr[split] = np.nextafter(thr[split], -np.inf)
        else:  # the last tree's leaves are dropped from the sum
            forest.roots = forest.roots[:-1]
        forest.col, forest.thr, forest.child = col, thr, child
        return forest

    monkeypatch.setattr(scorer_mod, "_forest", broken)
    rows = _hard_rows(model)
    compiled = compile_model(model)  # what the probe guards against really is wrong...
    assert np.max(np.abs(compiled(rows) - model.predict_proba(rows)[:, 1])) > 1e-9
    s = build_scorer(model)  # ...and is not used
    assert not s.compiled and "differs from predict_proba" in s.description
    assert np.array_equal(s(rows), model.predict_proba(rows)[:, 1])


def test_probe_rows_sit_on_and_beside_thresholds():
    X, y = _data()
    model = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(X, y)
    rows = probe_rows(model, n=2000)
    ts = _thresholds(model)
    j = next(iter(ts))
    t = next(v for v in ts[j] if math.isfinite(v))
    assert (rows[:, j] == t).any() and (rows[:, j] == np.nextafter(t, np.inf)).any() and np.isnan(rows[:, j]).any()
