"""Independent recomputation of a windowed count from raw events, for leakage tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _count(events: list[dict], rows: pd.DataFrame, window: str, inclusive: bool, hop) -> np.ndarray:
    ev = pd.DataFrame(events)[["user_id", "event_time"]]
    ev["event_time"] = pd.to_datetime(ev["event_time"], utc=True)
    by_user = {u: np.sort(g["event_time"].to_numpy()) for u, g in ev.groupby("user_id")}
    w = pd.Timedelta(window).to_timedelta64()
    out = np.zeros(len(rows), dtype=np.int64)
    ts = rows["event_timestamp"].to_numpy()
    boundaries = rows["event_timestamp"].dt.floor(hop).to_numpy()
    for i, (u, t, b) in enumerate(zip(rows["user_id"], ts, boundaries)):
        times = by_user.get(u)
        if times is None:
            continue
        lo = np.searchsorted(times, b - w, side="left")
        # Honest: strictly before the hop boundary. Leaky: up to and including the row itself.
        hi = np.searchsorted(times, t, side="right") if inclusive else np.searchsorted(times, b, side="left")
        out[i] = hi - lo
    return out


def strict_counts(events, rows, window, hop):
    """Events in [b - w, b), b = t's boundary of ``hop`` (a timedelta): what an honest feature sees."""
    return _count(events, rows, window, inclusive=False, hop=pd.Timedelta(hop))


def leaky_rows(events, rows, window, hop):
    """Events in [b - w, t]: a leaky feature that also counts the row's own transaction."""
    return _count(events, rows, window, inclusive=True, hop=pd.Timedelta(hop))
