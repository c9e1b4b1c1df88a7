"""The rows to learn from: one per transaction, labelled by what was known at the cutoff.

A transaction is fraud *for training* if a chargeback with ``is_fraud`` arrived at or
before the training cutoff (``label_time <= cutoff``). A chargeback that arrives after
the cutoff is not known yet, so that transaction counts as legitimate in this training
set; a later retrain with a later cutoff will see it. ``label_maturity_days`` can drop
the youngest transactions, whose chargebacks mostly have not had time to arrive.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Sequence

import pandas as pd

from skewless.features.dsl import RequestInput
from skewless.features.request_inputs import with_request_inputs
from skewless.lake import LANDING_ORDER, read_events
from skewless.settings import Settings

TX_COLUMNS = ["transaction_id", "user_id", "merchant_id", "amount", "currency", "country",
              "channel", "device_id", "event_time"]


def label_frame(settings: Settings, start: datetime | None, end: datetime | None,
                cutoff: datetime | None = None, request_inputs: Sequence[RequestInput] = ()) -> pd.DataFrame:
    """Transactions in ``[start, end)`` with ``label`` (0/1) as known at ``cutoff`` (default: end or now),
    and the ``request_inputs`` of the on-demand features derived from each (as serving derives them)."""
    cutoff = cutoff or end or datetime.now(timezone.utc)
    tx = read_events(settings.lake_path, settings.topics.transactions, "event_time", start, end,
                     TX_COLUMNS + list(LANDING_ORDER)).to_pandas()
    if tx.empty:
        return tx[TX_COLUMNS]
    # One row per transaction id, the first landed copy: the rule the ETL's features use.
    tx = tx.sort_values(list(LANDING_ORDER), kind="stable").drop_duplicates("transaction_id", keep="first")
    tx = tx[TX_COLUMNS].sort_values("event_time", kind="stable").reset_index(drop=True)
    lb = read_events(settings.lake_path, settings.topics.labels, "label_time", None, None,
                     ["transaction_id", "is_fraud", "label_time"]).to_pandas()
    if not lb.empty:
        lb = lb[lb["label_time"] <= pd.Timestamp(cutoff)]
        lb = lb.sort_values("label_time").drop_duplicates("transaction_id", keep="last")
        tx = tx.merge(lb, on="transaction_id", how="left")
    else:
        tx["is_fraud"], tx["label_time"] = None, pd.NaT
    tx["label"] = (tx["is_fraud"] == True).astype("int8")  # noqa: E712 - null (no label) -> 0
    maturity = timedelta(days=settings.training.label_maturity_days)
    tx = tx[tx["event_time"] <= pd.Timestamp(cutoff - maturity)]
    tx = with_request_inputs(request_inputs, tx)
    tx = tx.rename(columns={"event_time": "event_timestamp"}).drop(columns=["is_fraud"])
    return tx.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
