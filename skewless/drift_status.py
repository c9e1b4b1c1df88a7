"""The latest drift check's figures, as serving exports them: a small JSON file that
``skewless monitor drift`` writes (``LakeLayout.drift_latest_path``, beside the checks'
history) and serving reads on every scrape of ``/metrics`` — so serving shows drift
without importing monitoring, and without a server of its own.

"Latest" is the check of the newest traffic: a check replaces the file unless its live
window ends before the stored one's (a check of last week's traffic, run today, does not
hide today's verdict); of two checks of the same window, the later one wins.

Per feature (and ``score``, the model's score): the distribution statistic (the
Wasserstein-1 distance in robust sigmas for numbers, the Jensen-Shannon distance for
categories; None when one side has no values), the missing rate's change, and whether
the feature drifted (material and significant, see ``monitoring.drift``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from skewless.errors import DataError

FORMAT = 1


@dataclass(frozen=True)
class FeatureFigures:
    statistic: str  # "wasserstein_norm" | "js_distance"
    score: float | None  # its value; None: not measurable
    missing_rate_change: float | None  # live minus reference
    drifted: bool


@dataclass(frozen=True)
class DriftStatus:
    checked_at: float  # unix seconds: when the check ran
    window_start: float  # unix seconds: the live sample's window [start, end)
    window_end: float
    drifted: bool  # the dataset verdict: some feature drifted
    predictions: int  # the live sample's size
    model_version: str | None
    reference_run: str | None
    features: dict[str, FeatureFigures]

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, sort_keys=True)


def decode(doc: Any) -> DriftStatus:
    """The status from its JSON document; a DataError if it is not one."""
    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT:
        raise DataError(f"not a drift status of format {FORMAT}")
    try:
        features = {str(name): FeatureFigures(statistic=str(f["statistic"]), score=_opt(f["score"]),
                                              missing_rate_change=_opt(f["missing_rate_change"]),
                                              drifted=_bool(f["drifted"]))
                    for name, f in doc["features"].items()}
        return DriftStatus(checked_at=float(doc["checked_at"]), window_start=float(doc["window_start"]),
                           window_end=float(doc["window_end"]), drifted=_bool(doc["drifted"]),
                           predictions=int(doc["predictions"]), model_version=_text(doc.get("model_version")),
                           reference_run=_text(doc.get("reference_run")), features=features)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"unreadable drift status ({type(exc).__name__}: {exc})"[:200]) from exc


def read(path: Path) -> DriftStatus | None:
    """The latest drift status; None when no check was saved yet; a DataError when the file
    is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable ({type(exc).__name__})") from exc
    try:
        return decode(json.loads(text))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON ({exc})") from exc
    except DataError as exc:
        raise DataError(f"{path}: {exc.message}", exc.hint) from exc


def write(path: Path, status: DriftStatus) -> bool:
    """Make ``status`` the latest, unless the stored one covers newer traffic (its window
    ends later); an unreadable stored status is replaced. Atomic: a reader sees the old
    file or the new one. Returns whether it was written."""
    try:
        current = read(path)
    except DataError:
        current = None
    if current is not None and current.window_end > status.window_end:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(status.to_json(), encoding="utf-8")
    tmp.replace(path)
    return True


def _opt(x: Any) -> float | None:
    if x is None:
        return None
    v = float(x)
    return None if math.isnan(v) else v


def _bool(x: Any) -> bool:
    if not isinstance(x, bool):
        raise TypeError(f"expected true or false, got {x!r}"[:80])
    return x


def _text(x: Any) -> str | None:
    return None if x is None else str(x)
