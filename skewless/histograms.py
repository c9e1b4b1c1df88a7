"""Binned summaries of a sample: what drift statistics, and later the report, are computed
from — never the raw rows.

* :class:`NumericHistogram`: counts in bins whose edges are the *reference's* quantiles
  (``bins`` equal-mass bins, plus finer bins in the outer 0.5% so the tails are resolved),
  the missing count (nulls and non-finite values), the minimum, the maximum, and the sum
  and sum of squares (mean and standard deviation). A live sample is binned on the
  reference's edges (:meth:`NumericHistogram.bin`), so the two are directly comparable; a
  histogram is ~100 numbers whatever the sample size, and two histograms on the same
  edges merge exactly (hourly summaries add up to a day's).
* :class:`CategoricalHistogram`: counts per category (up to ``max_categories`` by name,
  the rarer ones counted together as ``other``), and the missing count.

Within a bin, values are modelled as spread uniformly (the CDF is piecewise linear through
the exact bin-edge values); with 100 quantile bins, statistics computed from histograms
match the raw samples' closely (tests/unit/test_drift.py measures it).

The summaries are a contract between stages, hence in the kernel: training saves the
reference (the training set's histograms, ``REFERENCE_ARTIFACT`` in the MLflow run, see
``reference_document``), monitoring reads it and bins the live sample on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from skewless.errors import DataError

Kind = Literal["numeric", "categorical"]

# Tail quantiles added below 1/bins (and mirrored above 1 - 1/bins).
_TAILS = (0.001, 0.0025, 0.005)
# A standard normal's IQR: IQR / 1.349 estimates the standard deviation, robustly.
_IQR_PER_SIGMA = 1.3489795003921634


def quantile_probs(bins: int) -> np.ndarray:
    """The reference quantiles that become bin edges: k/bins for k = 1..bins-1, and the tail
    quantiles finer than 1/bins."""
    inner = np.arange(1, bins) / bins
    tails = [t for t in _TAILS if t < 1.0 / bins]
    return np.unique(np.concatenate([tails, inner, [1.0 - t for t in tails]]))


def as_float(values: Any, name: str = "values") -> np.ndarray:
    """Values as float64 with NaN for missing (None, NaN, pd.NA); a non-number is a DataError."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return values.astype(np.float64, copy=False)
    series = values if isinstance(values, pd.Series) else pd.Series(values if hasattr(values, "__len__") else list(values))
    try:
        if series.dtype == object or pd.api.types.is_string_dtype(series.dtype):
            series = pd.to_numeric(series, errors="raise")
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{name}: not numeric ({exc})", "declare it categorical in monitoring.features") from exc


def infer_kind(values: Any) -> Kind:
    """``numeric`` for numbers (booleans excluded), ``categorical`` otherwise."""
    dtype = values.dtype if hasattr(values, "dtype") else pd.Series(values).dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "categorical"
    if pd.api.types.is_numeric_dtype(dtype):
        return "numeric"
    if dtype == object:  # numbers with None in an object column are still numbers
        sample = pd.Series(values).dropna()
        if len(sample) and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                               for v in sample.iloc[:1000]):
            return "numeric"
    return "categorical"


class _Counted:
    """A histogram's size and missing rate, from its ``n_values`` and ``missing``."""

    @property
    def n(self) -> int:
        return self.n_values + self.missing

    @property
    def missing_rate(self) -> float:
        return self.missing / self.n if self.n else math.nan


@dataclass(frozen=True, eq=False)
class NumericHistogram(_Counted):
    """Counts of a numeric sample in the bins ``(-inf, e0), [e0, e1), ..., [e_last, inf)``."""

    edges: np.ndarray
    counts: np.ndarray
    missing: int = 0
    lo: float = math.nan  # smallest value (NaN when there are none)
    hi: float = math.nan
    total: float = 0.0  # sum of the values
    total_sq: float = 0.0  # sum of their squares
    kind: Kind = field(default="numeric", init=False)

    def __post_init__(self) -> None:
        edges = np.asarray(self.edges, dtype=np.float64)
        counts = np.asarray(self.counts, dtype=np.int64)
        if edges.ndim != 1 or len(edges) == 0 or np.any(np.diff(edges) <= 0) or not np.all(np.isfinite(edges)):
            raise DataError("histogram edges must be finite and strictly increasing")
        if counts.shape != (len(edges) + 1,) or np.any(counts < 0):
            raise DataError(f"histogram counts: expected {len(edges) + 1} non-negative counts, got {counts.shape}")
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "counts", counts)

    # -- building -------------------------------------------------------------------------------
    @classmethod
    def reference(cls, values: Any, bins: int = 100, name: str = "values") -> "NumericHistogram":
        """The histogram of a reference sample, on edges at its own quantiles."""
        x = as_float(values, name)
        v = np.sort(x[np.isfinite(x)])
        if len(v) == 0:
            edges = np.array([0.0])
        else:  # np.quantile's default (linear) method, on the sorted values
            edges = np.unique(np.interp(quantile_probs(bins) * (len(v) - 1), np.arange(len(v)), v))
        return cls._of(v, edges, missing=len(x) - len(v))

    def bin(self, values: Any, name: str = "values") -> "NumericHistogram":
        """Another sample binned on this histogram's edges (comparable with it, mergeable)."""
        x = as_float(values, name)
        v = np.sort(x[np.isfinite(x)])
        return self._of(v, self.edges, missing=len(x) - len(v))

    @classmethod
    def _of(cls, v: np.ndarray, edges: np.ndarray, missing: int) -> "NumericHistogram":
        """The histogram of the sorted finite values ``v`` (and ``missing`` others)."""
        below = np.searchsorted(v, edges, side="left")  # values < each edge; bins are [e_i-1, e_i)
        counts = np.diff(np.concatenate([[0], below, [len(v)]]))
        return cls(edges=edges, counts=counts, missing=int(missing),
                   lo=float(v.min()) if len(v) else math.nan, hi=float(v.max()) if len(v) else math.nan,
                   total=float(v.sum()), total_sq=float(np.dot(v, v)))

    def merge(self, other: "NumericHistogram") -> "NumericHistogram":
        """The histogram of both samples together (same edges required)."""
        _same_edges(self, other)
        return NumericHistogram(edges=self.edges, counts=self.counts + other.counts, missing=self.missing + other.missing,
                                lo=float(np.fmin(self.lo, other.lo)), hi=float(np.fmax(self.hi, other.hi)),
                                total=self.total + other.total, total_sq=self.total_sq + other.total_sq)

    # -- figures --------------------------------------------------------------------------------
    @property
    def n_values(self) -> int:
        return int(self.counts.sum())


    @property
    def mean(self) -> float:
        return self.total / self.n_values if self.n_values else math.nan

    @property
    def std(self) -> float:
        n = self.n_values
        if n < 2:
            return math.nan
        return math.sqrt(max(self.total_sq - self.total * self.total / n, 0.0) / (n - 1))

    def knots(self) -> np.ndarray:
        """Bin boundaries with the outer bins closed at the sample's minimum and maximum."""
        lo = self.edges[0] if math.isnan(self.lo) else min(self.lo, self.edges[0])
        hi = self.edges[-1] if math.isnan(self.hi) else max(self.hi, self.edges[-1])
        return np.concatenate([[lo], self.edges, [hi]])

    def quantile(self, q: float | np.ndarray) -> float | np.ndarray:
        """Quantiles of the piecewise-uniform model (exact at the edges)."""
        if self.n_values == 0:
            return np.full(np.shape(q), math.nan) if np.ndim(q) else math.nan
        cdf = np.concatenate([[0.0], np.cumsum(self.counts) / self.n_values])
        return np.interp(q, cdf, self.knots())

    def scale(self) -> float:
        """A robust standard deviation: IQR / 1.349 (exactly sigma for a normal sample); the
        standard deviation when the IQR is 0; 1 for a constant (or empty) sample."""
        q1, q3 = self.quantile(np.array([0.25, 0.75]))
        iqr = float(q3 - q1)
        if iqr > 0:
            return iqr / _IQR_PER_SIGMA
        sd = self.std
        return sd if sd > 0 else 1.0

    # -- storage --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"kind": "numeric", "edges": self.edges.tolist(), "counts": self.counts.tolist(),
                "missing": self.missing, "lo": _num(self.lo), "hi": _num(self.hi),
                "total": self.total, "total_sq": self.total_sq}


@dataclass(frozen=True, eq=False)
class CategoricalHistogram(_Counted):
    """Counts per category; ``other`` counts the categories not kept by name."""

    counts: dict[str, int]
    missing: int = 0
    other: int = 0
    kind: Kind = field(default="categorical", init=False)

    @classmethod
    def reference(cls, values: Any, max_categories: int = 100) -> "CategoricalHistogram":
        """The ``max_categories`` most frequent categories by name, the rest as ``other``."""
        counts, missing = _category_counts(values)
        items = list(counts.items())
        return cls(counts=dict(items[:max_categories]), missing=missing,
                   other=sum(v for _, v in items[max_categories:]))

    def bin(self, values: Any, max_new: int = 100) -> "CategoricalHistogram":
        """Another sample counted on this histogram's categories. A category this one does not
        name is counted by name (a new category) when this histogram kept every category, and
        as ``other`` when it did not (it may be one of the rarer reference categories)."""
        seen, missing = _category_counts(values)
        counts = {k: 0 for k in self.counts}
        other = 0
        new = 0
        for k, v in seen.items():
            if k in counts:
                counts[k] += v
            elif self.other == 0 and new < max_new:
                counts[k] = v
                new += 1
            else:
                other += v
        return CategoricalHistogram(counts=counts, missing=missing, other=other)

    def merge(self, other: "CategoricalHistogram") -> "CategoricalHistogram":
        counts = dict(self.counts)
        for k, v in other.counts.items():
            counts[k] = counts.get(k, 0) + v
        return CategoricalHistogram(counts=counts, missing=self.missing + other.missing, other=self.other + other.other)

    @property
    def n_values(self) -> int:
        return int(sum(self.counts.values()) + self.other)


    def shares(self) -> dict[str, float]:
        n = self.n_values
        return {k: v / n for k, v in self.counts.items()} if n else {}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "categorical", "counts": dict(self.counts), "missing": self.missing, "other": self.other}


Histogram = NumericHistogram | CategoricalHistogram


def from_dict(data: Mapping[str, Any]) -> Histogram:
    """A histogram back from :meth:`to_dict`."""
    kind = data.get("kind")
    if kind == "numeric":
        return NumericHistogram(edges=np.asarray(data["edges"], dtype=np.float64),
                                counts=np.asarray(data["counts"], dtype=np.int64), missing=int(data["missing"]),
                                lo=_float(data.get("lo")), hi=_float(data.get("hi")),
                                total=float(data.get("total", 0.0)), total_sq=float(data.get("total_sq", 0.0)))
    if kind == "categorical":
        return CategoricalHistogram(counts={str(k): int(v) for k, v in data["counts"].items()},
                                    missing=int(data["missing"]), other=int(data.get("other", 0)))
    raise DataError(f"unknown histogram kind {kind!r}", "expected 'numeric' or 'categorical'")


def summarize(columns: Mapping[str, Any], kinds: Mapping[str, Kind] | None = None, bins: int = 100,
              max_categories: int = 100) -> dict[str, Histogram]:
    """Reference histograms of each column (a DataFrame or a mapping of name -> values);
    ``kinds`` overrides the inferred kind by name."""
    kinds = kinds or {}
    out: dict[str, Histogram] = {}
    for name in _names(columns):
        values = columns[name]
        kind = kinds.get(name) or infer_kind(values)
        out[name] = (NumericHistogram.reference(values, bins, name=name) if kind == "numeric"
                     else CategoricalHistogram.reference(values, max_categories))
    return out


def summarize_like(reference: Mapping[str, Histogram], columns: Mapping[str, Any],
                   max_categories: int = 100) -> dict[str, Histogram]:
    """Histograms of a live sample binned like ``reference`` (its columns; a reference column
    the live sample lacks is a DataError)."""
    absent = [name for name in reference if name not in _names(columns)]
    if absent:
        raise DataError(f"the live sample has no column{'s' * (len(absent) > 1)} {', '.join(absent)}",
                        "the reference and live samples must hold the same features")
    out: dict[str, Histogram] = {}
    for name, ref in reference.items():
        if isinstance(ref, NumericHistogram):
            out[name] = ref.bin(columns[name], name=name)
        else:
            out[name] = ref.bin(columns[name], max_new=max_categories)
    return out


def _names(columns: Mapping[str, Any]) -> list[str]:
    return [str(c) for c in (columns.columns if isinstance(columns, pd.DataFrame) else columns.keys())]


def _category_counts(values: Any) -> tuple[dict[str, int], int]:
    """Counts per category (as text, most frequent first) and the missing count."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "US":  # text: no missing values possible
        keys, counts = np.unique(values, return_counts=True)
        pairs = zip(keys.astype(str).tolist(), counts.tolist())
        missing = 0
    else:
        s = values if isinstance(values, pd.Series) else pd.Series(values)
        missing = int(s.isna().sum())
        vc = s.value_counts(dropna=True)
        pairs = zip(vc.index, vc.tolist())
    out: dict[str, int] = {}
    for k, v in pairs:
        label = category_label(k)
        out[label] = out.get(label, 0) + int(v)
    return dict(sorted(out.items(), key=lambda kv: -kv[1])), missing


def category_label(value: Any) -> str:
    """A category's name as text, the same whichever way it was carried: True, 1, 1.0 and
    "1" are all "1" (the prediction log carries every feature as a JSON number, training
    data may hold booleans, integers or text)."""
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def _same_edges(a: NumericHistogram, b: NumericHistogram) -> None:
    if len(a.edges) != len(b.edges) or not np.array_equal(a.edges, b.edges):
        raise DataError("the histograms are binned on different edges",
                        "bin the live sample with the reference histogram's bin()")


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x


def _float(x: Any) -> float:
    return math.nan if x is None else float(x)


def check_comparable(reference: Histogram, live: Histogram, name: str) -> None:
    """A DataError unless ``live`` can be compared with ``reference``."""
    if reference.kind != live.kind:
        raise DataError(f"{name}: the reference is {reference.kind} and the live sample {live.kind}")
    if isinstance(reference, NumericHistogram):
        try:
            _same_edges(reference, live)  # type: ignore[arg-type]
        except DataError as exc:
            raise DataError(f"{name}: {exc.message}", exc.hint) from exc


# -- the drift reference saved with a training run ------------------------------------------------

REFERENCE_ARTIFACT = "drift/reference.json"  # path inside the MLflow run's artifacts
REFERENCE_FORMAT = 1
SCORE = "score"  # the model's score, summarised beside its features


def reference_document(histograms: Mapping[str, Histogram], **meta: Any) -> dict[str, Any]:
    """The JSON document of a drift reference: each feature's (and the score's) histogram,
    and ``meta`` (rows, model version, ...). A few kB per feature, never raw rows."""
    return {"format": REFERENCE_FORMAT, **meta, "histograms": {n: h.to_dict() for n, h in histograms.items()}}


def read_reference_document(doc: Mapping[str, Any], source: str = "drift reference") -> tuple[dict[str, Histogram], dict[str, Any]]:
    """The histograms and the metadata of a ``reference_document``."""
    if not isinstance(doc, Mapping) or doc.get("format") != REFERENCE_FORMAT or not isinstance(doc.get("histograms"), Mapping):
        raise DataError(f"{source}: not a drift reference of format {REFERENCE_FORMAT}")
    try:
        hists = {str(n): from_dict(h) for n, h in doc["histograms"].items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{source}: unreadable histogram ({type(exc).__name__}: {exc})"[:300]) from exc
    return hists, {k: v for k, v in doc.items() if k not in ("histograms", "format")}

