"""Request-time inputs derived from events: the one function training, serving and
monitoring call, so a transform's request fields cannot drift between them (the seam
for training/serving skew).

``derive(inputs, events)`` takes the ``RequestInput`` declarations (``skewless.features.dsl``,
read back from Feast's registry by ``feast_objects.request_inputs``) and either a frame of
events (training's labelled transactions, monitoring's samples) or one event as a mapping
(serving's transaction), and returns the request inputs: a frame with one column per
input, or a dict of floats. Both shapes compute the same float64 for the same event:

- ``value``: ``float(x)``, the same conversion NumPy does;
- ``epoch_seconds``: the exact integer of microseconds since 1970-01-01T00:00Z (a finer
  time floored to the microsecond, the resolution of the contracts and of Python's
  datetime), then one correctly rounded division by 1e6. Any UTC offset gives the
  instant's seconds; a time without a timezone is an error, never read as local or UTC.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Sequence, overload

import numpy as np
import pandas as pd

from skewless.errors import DataError
from skewless.features.dsl import RequestInput

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)
_EPOCH_TS = pd.Timestamp(_EPOCH)
_ONE_US_TD = pd.Timedelta(1, "us")


@overload
def derive(inputs: Sequence[RequestInput], events: pd.DataFrame) -> pd.DataFrame: ...
@overload
def derive(inputs: Sequence[RequestInput], events: Mapping[str, Any]) -> dict[str, float]: ...


def derive(inputs: Sequence[RequestInput], events: pd.DataFrame | Mapping[str, Any]):
    """The request inputs of ``events``: a frame (same index) for a frame, a dict for one event."""
    if isinstance(events, pd.DataFrame):
        return pd.DataFrame({i.name: _column(i, events) for i in inputs}, index=events.index)
    return {i.name: _scalar(i, events) for i in inputs}


def with_request_inputs(inputs: Sequence[RequestInput], events: pd.DataFrame) -> pd.DataFrame:
    """``events`` with its request inputs added as columns (a copy)."""
    return events.assign(**{c: v.to_numpy() for c, v in derive(inputs, events).items()})


def _source(i: RequestInput, columns: Any) -> None:
    if i.column not in columns:
        raise DataError(f"request input {i.name!r} derives from the event's {i.column!r}, which the event lacks")


def _scalar(i: RequestInput, event: Mapping[str, Any]) -> float:
    _source(i, event)
    value = event[i.column]
    if i.derive == "value":
        return float(value)
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise DataError(f"request input {i.name!r}: the event's {i.column!r} must be a timezone-aware "
                        f"time, got {value!r}"[:200])
    return ((value - _EPOCH) // _ONE_US) / 1e6  # exact int (pd.Timestamp: floor of its ns) / 1e6


def _column(i: RequestInput, events: pd.DataFrame) -> np.ndarray:
    _source(i, events.columns)
    values = events[i.column]
    if i.derive == "value":
        return values.to_numpy(dtype="float64")
    if pd.api.types.is_datetime64_dtype(values.dtype) and getattr(values.dtype, "tz", None) is None:
        raise DataError(f"request input {i.name!r}: the events' {i.column!r} has no timezone")
    times = pd.to_datetime(values, utc=True)
    micros = ((times - _EPOCH_TS) // _ONE_US_TD).to_numpy(dtype="int64")  # floor, exact
    return micros / 1e6
