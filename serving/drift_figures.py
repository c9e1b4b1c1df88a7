"""The latest drift check (``skewless monitor drift``) as Prometheus gauges: its figures
are read from the drift status file it leaves (``skewless.drift_status``, under the state
dir) on every scrape of ``/metrics`` and on the service's timer — a ``stat`` when the file
has not changed, so a scrape costs next to nothing.

Gauges, per feature (``feature`` label; ``score`` is the model's score):
``skewless_drift_score`` (the distribution statistic: W1 in robust sigmas for numbers,
Jensen-Shannon distance for categories; NaN when not measurable),
``skewless_drift_missing_rate_change`` and ``skewless_drift_flagged`` (1 drifted, 0 not);
for the check: ``skewless_drift_detected``, ``skewless_drift_checked_timestamp_seconds``,
``skewless_drift_window_end_timestamp_seconds``, ``skewless_drift_predictions`` and
``skewless_drift_status_readable``.

- No check yet: the check's gauges are NaN ("unknown", not "no drift") and no feature has
  a series.
- The file unreadable (half-copied, edited by hand): ``skewless_drift_status_readable`` 0,
  the last figures read stay.
- A feature the latest check no longer has (a new champion's features): its series are
  NaN, not the old model's figures.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from serving import metrics
from skewless import drift_status
from skewless.drift_status import DriftStatus
from skewless.errors import DataError

NAN = math.nan


class DriftFigures:
    def __init__(self, path: Path):
        self.path = path
        self.status: DriftStatus | None = None  # the last status read
        self._seen: tuple[int, ...] | None = None  # identity of the file last read (inode, times, size)
        self._labelled: set[str] = set()
        with warnings.catch_warnings():  # "not implemented in multi-process mode": a new worker has none to clear
            warnings.simplefilter("ignore", UserWarning)
            for gauge in (metrics.DRIFT_SCORE, metrics.DRIFT_MISSING, metrics.DRIFT_FLAGGED):
                gauge.clear()  # another app's features (in this process) are not this one's
        self.publish(readable=True)

    def check(self) -> str | None:
        """Read the status if the file changed and set the gauges; the problem, or None."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self.status, self._seen = None, None
            self.publish(readable=True)
            return None
        except OSError as exc:
            self.publish(readable=False)
            return f"drift status unreadable: {type(exc).__name__}"
        seen = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)  # a check replaces the file: new inode
        if seen == self._seen:
            return None
        try:
            self.status = drift_status.read(self.path)
        except DataError as exc:
            self._seen = None  # try again at the next scrape
            self.publish(readable=False)
            return f"drift status unreadable: {exc.message}"
        self._seen = seen
        self.publish(readable=True)
        return None

    def publish(self, readable: bool) -> None:
        metrics.DRIFT_READ.set(1 if readable else 0)
        s = self.status
        features = s.features if s is not None else {}
        for name in sorted(self._labelled - set(features)):
            for gauge in (metrics.DRIFT_SCORE, metrics.DRIFT_MISSING, metrics.DRIFT_FLAGGED):
                gauge.labels(name).set(NAN)
        for name, f in features.items():
            metrics.DRIFT_SCORE.labels(name).set(_num(f.score))
            metrics.DRIFT_MISSING.labels(name).set(_num(f.missing_rate_change))
            metrics.DRIFT_FLAGGED.labels(name).set(1 if f.drifted else 0)
        self._labelled |= set(features)
        metrics.DRIFT_DETECTED.set(NAN if s is None else 1 if s.drifted else 0)
        metrics.DRIFT_CHECKED.set(NAN if s is None else s.checked_at)
        metrics.DRIFT_WINDOW_END.set(NAN if s is None else s.window_end)
        metrics.DRIFT_PREDICTIONS.set(NAN if s is None else s.predictions)


def _num(v: float | None) -> float:
    return NAN if v is None else float(v)
