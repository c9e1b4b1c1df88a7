"""Scoring the champion without scikit-learn's per-call overhead: the same numbers, sooner.

One row through ``HistGradientBoostingClassifier.predict_proba`` costs ~1.5 ms, almost all
of it per-call work (input validation, an OpenMP pool, one Cython call per tree for 200
trees), not arithmetic. ``build_scorer`` compiles a fitted model once, when it is loaded,
into NumPy arrays that score with a handful of array operations:

* a ``Pipeline`` of ``SimpleImputer`` (NaN only, no indicator), ``StandardScaler`` and
  ``"passthrough"`` steps, ending in
* a binary ``HistGradientBoostingClassifier`` (numeric features, no categorical
  preprocessor): every tree of every iteration stacked into one node array and walked
  for all trees at once, level by level — ``x <= num_threshold`` goes left, NaN follows
  the node's ``missing_go_to_left``, exactly as scikit-learn's ``_predict_from_raw_data``
  — then the baseline plus the leaf values summed in scikit-learn's order, and the
  logistic link (``scipy.special.expit``); or
* a binary ``LogisticRegression``: ``x @ coef_.T + intercept_`` then ``expit``.

That is what ``training.models`` produces (the boosters and the logistic baseline). Any
other model, or an input a step would reject (``inf`` before an imputer, scaler or
logistic regression, NaN reaching a logistic regression, a wrong shape or dtype), goes to
the model's own ``predict_proba``, so it gets scikit-learn's answer or scikit-learn's
error. Each compiled scorer is checked against ``predict_proba`` on probe rows (values on
and beside every split threshold, NaN) before it is used; a difference above 1e-9 keeps
scikit-learn. Compiled arrays are never written to: one scorer is shared by all requests.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

import numpy as np
from scipy.special import expit

log = logging.getLogger(__name__)

TOLERANCE = 1e-9  # the most a compiled scorer may differ from predict_proba on the probe rows


@dataclass(frozen=True)
class _Step:
    """An input transform: ``fn(x) -> new array``; whether it accepts NaN (and removes it)
    and whether it accepts +-inf, as its scikit-learn counterpart validates input."""

    fn: Callable[[np.ndarray], np.ndarray]
    accepts_nan: bool
    removes_nan: bool
    accepts_inf: bool


class Scorer:
    """``scorer(x)`` -> the positive class's probability for each row of ``x`` (float64,
    shape (n, n_features)), equal to ``model.predict_proba(x)[:, 1]``."""

    def __init__(self, model: Any, description: str, steps: tuple[_Step, ...] = (), head: _Step | None = None):
        self.model = model
        self.description = description
        self._steps = steps
        self._head = head
        self.compiled = head is not None
        self.n_features = getattr(model, "n_features_in_", None)
        nan_ok, nan_present = True, True
        for s in (*steps, head) if head is not None else ():
            if nan_present and not s.accepts_nan:
                nan_ok = False
            nan_present = nan_present and not s.removes_nan
        self._nan_ok = nan_ok
        self._inf_ok = head is not None and all(s.accepts_inf for s in (*steps, head))

    def __call__(self, x: np.ndarray, guard: Callable[[], ContextManager] | None = None) -> np.ndarray:
        """``guard``: a context manager entered around scikit-learn's own call only (e.g. a
        thread limit for its OpenMP pool); the compiled path needs none."""
        if not self._takes(x):
            with (guard or nullcontext)():
                return self.model.predict_proba(x)[:, 1]
        for step in self._steps:
            x = step.fn(x)
        return self._head.fn(x)

    def _takes(self, x: Any) -> bool:
        if not (self.compiled and isinstance(x, np.ndarray) and x.dtype == np.float64 and x.ndim == 2
                and x.shape[1] == self.n_features and x.shape[0] > 0):
            return False
        if self._nan_ok and self._inf_ok:
            return True
        finite = np.isfinite(x)
        if finite.all():
            return True
        if not self._inf_ok and np.isinf(x).any():
            return False
        return self._nan_ok or not np.isnan(x).any()

    def __repr__(self) -> str:
        return f"Scorer({self.description})"


# -- compiling the steps ----------------------------------------------------------------------
class Unsupported(Exception):
    """This model (or step) has no compiled form: score with scikit-learn."""


def _imputer(step: Any) -> _Step:
    from sklearn.impute import SimpleImputer

    mv = step.missing_values
    if (type(step) is not SimpleImputer or step.add_indicator or not isinstance(mv, float) or not math.isnan(mv)):
        raise Unsupported(f"{step!r}: only SimpleImputer(missing_values=nan, add_indicator=False)")
    if np.dtype(getattr(step, "_fill_dtype", None) or np.float64) != np.float64:
        raise Unsupported(f"{step!r}: fitted on {step._fill_dtype}, not float64")
    try:  # as transform does: statistics_.astype(_fill_dtype) (a constant fill is stored as object)
        fill = np.asarray(step.statistics_).astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise Unsupported(f"{step!r}: statistics {exc}") from exc
    if fill.shape != (step.n_features_in_,) or np.isnan(fill).any():
        raise Unsupported(f"{step!r}: statistics must be finite (keep_empty_features, or no empty column)")
    fill.flags.writeable = False

    def impute(x: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(x), fill, x)

    return _Step(impute, accepts_nan=True, removes_nan=True, accepts_inf=False)


def _scaler(step: Any) -> _Step:
    from sklearn.preprocessing import StandardScaler

    if type(step) is not StandardScaler:
        raise Unsupported(f"{step!r}")
    mean = np.array(step.mean_, dtype=np.float64) if step.with_mean else None
    scale = np.array(step.scale_, dtype=np.float64) if step.with_std else None

    def standardize(x: np.ndarray) -> np.ndarray:  # as StandardScaler.transform: X -= mean_; X /= scale_
        if mean is not None:
            x = x - mean
        if scale is not None:
            x = x / scale
        return x

    return _Step(standardize, accepts_nan=True, removes_nan=False, accepts_inf=False)


def _logistic(model: Any) -> _Step:
    from sklearn.linear_model import LogisticRegression

    if type(model) is not LogisticRegression or len(model.classes_) != 2 or model.coef_.shape[0] != 1:
        raise Unsupported(f"{model!r}: only a binary LogisticRegression")
    coef_t = np.array(model.coef_, dtype=np.float64).T.copy()
    intercept = np.array(model.intercept_, dtype=np.float64)

    def proba(x: np.ndarray) -> np.ndarray:  # as LinearClassifierMixin._predict_proba_lr
        return expit((x @ coef_t + intercept).reshape(-1))

    return _Step(proba, accepts_nan=False, removes_nan=False, accepts_inf=False)


@dataclass
class Forest:
    """Every tree stacked: node ``i`` compares slot ``col[i]`` of the row's lookup vector with
    ``thr[i]``; ``<=`` goes to ``child[i] - 1`` (left), else ``child[i]`` (right). The
    lookup vector is ``[x with NaN -> -inf, x, NaN]``: a node whose missing values go left
    reads the first copy (NaN becomes -inf, which is ``<=`` any threshold), a node whose
    missing values go right reads the second (NaN compares False); a leaf reads the final
    NaN and points to itself, so it stays put. Node 0 is a leaf holding the baseline, so
    the leaf values come out in scikit-learn's order: baseline, then the trees."""

    n_features: int
    col: np.ndarray = field(repr=False)
    thr: np.ndarray = field(repr=False)
    child: np.ndarray = field(repr=False)
    value: np.ndarray = field(repr=False)
    roots: np.ndarray = field(repr=False)
    depth: int = 0

    @property
    def trees(self) -> int:
        return len(self.roots) - 1

    def raw(self, x: np.ndarray) -> np.ndarray:
        n, f = x.shape
        width = 2 * f + 1
        lookup = np.empty((n, width))
        np.copyto(lookup[:, f:2 * f], x)
        lookup[:, :f] = np.where(np.isnan(x), -np.inf, x)
        lookup[:, 2 * f] = np.nan
        col, thr, child = self.col, self.thr, self.child
        if n == 1:
            flat = lookup[0]
            node = self.roots
            for _ in range(self.depth):
                node = child[node] - (flat[col[node]] <= thr[node])
            return np.cumsum(self.value[node])[-1:]  # cumsum: see below
        else:
            flat = lookup.reshape(-1)
            base = (np.arange(n, dtype=np.intp) * width)[:, None]
            node = np.broadcast_to(self.roots, (n, len(self.roots)))
            for _ in range(self.depth):
                node = child[node] - (flat[col[node] + base] <= thr[node])
        # cumsum adds left to right, one value at a time: raw = baseline + tree 0 + tree 1 + ...,
        # the order of scikit-learn's ``raw_predictions[:, k] += predictor.predict(X)``.
        return np.cumsum(self.value[node], axis=1)[:, -1]


def _forest(model: Any) -> Forest:
    from sklearn.ensemble import HistGradientBoostingClassifier

    if type(model) is not HistGradientBoostingClassifier:
        raise Unsupported(f"{type(model).__name__}")
    if getattr(model, "_preprocessor", None) is not None or model.is_categorical_ is not None:
        raise Unsupported("categorical features")
    if model.n_trees_per_iteration_ != 1 or len(model.classes_) != 2:
        raise Unsupported("only a binary classifier")
    from sklearn._loss.link import LogitLink

    if not isinstance(getattr(model._loss, "link", None), LogitLink):
        raise Unsupported(f"loss {type(model._loss).__name__}: only the logistic link")
    baseline = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)
    if baseline.shape != (1,):
        raise Unsupported("baseline of more than one value")
    f = int(model.n_features_in_)
    nan_slot = 2 * f
    col, thr, child, value = [nan_slot], [np.inf], [0], [float(baseline[0])]  # node 0: the baseline leaf
    roots = [0]
    depth = 0
    for iteration in model._predictors:
        (tree,) = iteration
        nodes = tree.nodes
        if nodes["is_categorical"].any():
            raise Unsupported("a categorical split")
        # Renumber breadth-first so that each split's children are adjacent (left, right).
        new = {0: len(col)}
        order = [0]
        col.append(0), thr.append(0.0), child.append(0), value.append(0.0)
        for old in order:
            node = nodes[old]
            at = new[old]
            depth = max(depth, int(node["depth"]))
            if node["is_leaf"]:
                col[at], thr[at], child[at], value[at] = nan_slot, np.inf, at, float(node["value"])
                continue
            left, right = int(node["left"]), int(node["right"])
            new[left], new[right] = len(col), len(col) + 1
            for _ in range(2):
                col.append(0), thr.append(0.0), child.append(0), value.append(0.0)
            order += [left, right]
            feature = int(node["feature_idx"])
            col[at] = feature if node["missing_go_to_left"] else f + feature
            thr[at], child[at] = float(node["num_threshold"]), new[right]
        roots.append(new[0])
    arrays = [np.array(a, dtype=t) for a, t in ((col, np.intp), (thr, np.float64), (child, np.intp),
                                                  (value, np.float64), (roots, np.intp))]
    for a in arrays:
        a.flags.writeable = False
    return Forest(f, *arrays, depth=depth)


def _trees(model: Any) -> tuple[_Step, Forest]:
    forest = _forest(model)

    def proba(x: np.ndarray) -> np.ndarray:  # as HalfBinomialLoss.predict_proba: expit(raw)
        return expit(forest.raw(x))

    return _Step(proba, accepts_nan=True, removes_nan=False, accepts_inf=True), forest


def compile_model(model: Any) -> Scorer:
    """The compiled scorer of ``model``; ``Unsupported`` when there is none."""
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline):
        *transforms, (_, last) = model.steps
    else:
        transforms, last = [], model
    steps = []
    for _, step in transforms:
        if step is None or step == "passthrough":
            continue
        name = type(step).__name__
        steps.append(_imputer(step) if name == "SimpleImputer" else _scaler(step) if name == "StandardScaler"
                     else _unsupported(step))
    names = [type(s).__name__ for _, s in transforms if s is not None and s != "passthrough"]
    if type(last).__name__ == "LogisticRegression":
        head = _logistic(last)
        what = f"numpy logistic regression ({last.coef_.shape[1]} features)"
    else:
        head, forest = _trees(last)
        what = f"numpy trees ({forest.trees} trees, depth {forest.depth}, {len(forest.col)} nodes)"
    if names:
        what += " after " + " + ".join(names)
    return Scorer(model, what, tuple(steps), head)


def _unsupported(step: Any) -> _Step:
    raise Unsupported(f"step {type(step).__name__}")


def probe_rows(model: Any, n: int = 256, seed: int = 0) -> np.ndarray | None:
    """Rows that reach many leaves: for every feature, values on, just below and just above
    its split thresholds, a few far values, and NaN; ``None`` when the model's feature
    count is unknown."""
    f = getattr(model, "n_features_in_", None)
    if not f:
        return None
    rng = np.random.default_rng(seed)
    per_feature: list[list[float]] = [[-1.0, 0.0, 1.0, -1e6, 1e6, math.nan] for _ in range(int(f))]
    last = model.steps[-1][1] if hasattr(model, "steps") else model
    for iteration in getattr(last, "_predictors", ()):
        for tree in iteration:
            split = tree.nodes[tree.nodes["is_leaf"] == 0]
            for j, t in zip(split["feature_idx"].tolist(), split["num_threshold"].tolist()):
                if math.isfinite(t):
                    per_feature[j] += [t, math.nextafter(t, -math.inf), math.nextafter(t, math.inf)]
    rows = np.empty((n, int(f)))
    for j, values in enumerate(per_feature):
        rows[:, j] = rng.choice(np.array(values), size=n)
    return rows


def build_scorer(model: Any) -> Scorer:
    """The fastest scorer that gives ``model.predict_proba(x)[:, 1]``: compiled when the model
    is one ``compile_model`` knows and its scores on ``probe_rows`` agree within 1e-9,
    else scikit-learn's own (the reason in ``description``)."""
    try:
        scorer = compile_model(model)
    except Unsupported as exc:
        return Scorer(model, f"scikit-learn predict_proba ({exc})")
    except Exception as exc:  # noqa: BLE001 - a model we misread must still be served, by scikit-learn
        log.warning("compiling the model's scorer failed, scoring with scikit-learn: %s", exc)
        return Scorer(model, f"scikit-learn predict_proba (compiling failed: {type(exc).__name__}: {exc})")
    rows = probe_rows(model)
    if rows is not None:
        if not scorer._nan_ok:
            rows = np.nan_to_num(rows, nan=0.0)
        try:
            want = model.predict_proba(rows)[:, 1]
            got = scorer(rows)
            worst = float(np.max(np.abs(got - want)))
        except Exception as exc:  # noqa: BLE001
            worst, why = math.inf, f"{type(exc).__name__}: {exc}"
        else:
            why = f"differs from predict_proba by {worst:.3g} on probe rows"
        if not worst <= TOLERANCE:
            log.warning("the compiled scorer was not used: %s", why)
            return Scorer(model, f"scikit-learn predict_proba (compiled scorer {why})")
    return scorer
