"""The prediction log as landed in the lake, one row per request: what the served
consistency check and live drift both read."""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from skewless.contracts import PREDICTIONS
from skewless.errors import DataError
from skewless.lake import LANDING_ORDER, read_events
from skewless.settings import Settings


def landed_predictions(settings: Settings, columns: list[str], start: datetime | None = None,
                       end: datetime | None = None) -> tuple[pd.DataFrame, int]:
    """``columns`` of the landed predictions with ``predicted_at`` in ``[start, end)``, one per
    ``request_id`` (the first landed copy), in landing order; and how many copies were dropped."""
    table = read_events(settings.lake_path, settings.topics.predictions, "predicted_at", start=start, end=end,
                        columns=[*columns, *LANDING_ORDER], contract=PREDICTIONS)
    if table.num_columns == 0:
        raise DataError(f"no predictions in the lake (topic {settings.topics.predictions})",
                        "serve with serving.log_predictions on, then land them: skewless ingest consume")
    frame = table.to_pandas()
    landed = len(frame)
    frame = frame.sort_values(list(LANDING_ORDER), kind="stable").drop_duplicates("request_id")
    return frame.drop(columns=list(LANDING_ORDER)), landed - len(frame)
