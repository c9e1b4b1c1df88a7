"""The fraud domain's features, declared once. Spark (offline and streaming), Feast and
serving all derive from these objects."""

from __future__ import annotations

import numpy as np
import pandas as pd

from skewless.features.dsl import Aggregation as A
from skewless.features.dsl import Entity, EventSource, FeatureServiceSpec, RequestInput, RequestTransform, WindowedView

user = Entity("user", "user_id", "a card holder")
merchant = Entity("merchant", "merchant_id", "a merchant accepting payments")

transactions = EventSource("transactions", contract="transactions", time_column="event_time")
# Chargebacks count from the moment they are known (label time), at the transaction's merchant.
chargebacks = EventSource(
    "chargebacks", contract="labels", time_column="label_time",
    enrich=("transactions", "transaction_id", ("merchant_id",)), where="is_fraud",
)

# Hops (issue 11; `skewless bench hops`, figures in benchmarks/README.md). A value moves at
# its hop boundary, so the per-card velocity views hop every 250 ms: a transaction is in its
# card's features within 250 ms of its time (plus the stream's own delay; a 1 s hop alone
# took most of the 1 s freshness budget). A table has a row per change point, not per hop,
# so that costs 0.6% more rows than the former 1m hop, and nothing measurable against 1 s
# (a card rarely pays twice a second: both sit at the ceiling of 1 + windows rows per event).
# The merchant views are not per card: merchant_activity keeps 5m — a merchant has several
# events per 5 minutes, so 1m would add 13-59% rows and 1s 18-128% (by traffic per
# merchant), and the stream keeps up to 30d/hop buckets per merchant; chargebacks are rare
# (2 rows each at any hop), so 1m counts one within a minute instead of an hour, at no cost.
user_spend = WindowedView(
    "user_spend", (user,), transactions, hop="250ms",
    description="a user's transaction count and amounts over the last hour, day and week",
    aggregations=tuple(
        agg for w in ("1h", "24h", "7d") for agg in (
            A("count", w), A("sum", w, "amount"), A("mean", w, "amount"), A("max", w, "amount"))
    ),
)

user_diversity = WindowedView(
    "user_diversity", (user,), transactions, hop="250ms",
    description="how many merchants and countries a user paid at in the last day, and recency",
    aggregations=(
        A("distinct_count", "24h", "merchant_id", name="distinct_merchants_24h"),
        A("distinct_count", "24h", "country", name="distinct_countries_24h"),
        A("distinct_count", "24h", "device_id", name="distinct_devices_24h"),
        A("last_time", "30d", name="last_tx_time"),
    ),
)

user_merchant = WindowedView(
    "user_merchant", (user, merchant), transactions, hop="250ms",
    description="a user's transactions at one merchant over 30 days",
    aggregations=(A("count", "30d", name="tx_count_30d"),),
)

merchant_activity = WindowedView(
    "merchant_activity", (merchant,), transactions, hop="5m",
    description="a merchant's transaction counts",
    aggregations=(A("count", "1h"), A("count", "24h"), A("count", "30d")),
)

merchant_chargebacks = WindowedView(
    "merchant_chargebacks", (merchant,), chargebacks, hop="1m",
    description="chargebacks at a merchant over 30 days, counted by label time",
    aggregations=(A("count", "30d", name="chargebacks_30d"),),
)


def _zero_nan(x: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(x), 0.0, x)


def _request_features(cols):
    """Request-time features over columns: a DataFrame (Feast, training) or a mapping of
    NumPy arrays (online serving). Same arithmetic either way."""
    def col(name: str) -> np.ndarray:
        return np.asarray(cols[name], dtype="float64")

    tx_30d = _zero_nan(col("merchant_activity__count_30d"))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = col("amount") / col("user_spend__mean_amount_7d")
        rate = _zero_nan(col("merchant_chargebacks__chargebacks_30d")) / np.where(tx_30d > 0, tx_30d, np.nan)
        gap = col("event_epoch") - col("user_diversity__last_tx_time")
    out = {
        # A negative gap (the transaction is older than the user's last known one: a late
        # or replayed event, a wrong clock) is unknown, not "just now": training never sees
        # one (its rows are joined as of their own time), so a number there would be
        # outside everything the model learned. NaN is what a user with no history gets.
        "seconds_since_last_tx": np.where(gap >= 0, gap, np.nan),
        "amount_vs_user_mean_7d": np.where(np.isinf(ratio), np.nan, ratio),
        "first_tx_at_merchant": (_zero_nan(col("user_merchant__tx_count_30d")) == 0).astype("int64"),
        "merchant_chargeback_rate_30d": _zero_nan(rate),
    }
    return pd.DataFrame(out, index=cols.index) if isinstance(cols, pd.DataFrame) else out


request_features = RequestTransform(
    "request_features",
    request_inputs=(
        RequestInput("amount", "amount", as_feature=True),
        # The transaction's time in unix seconds (the request's own clock).
        RequestInput("event_epoch", "event_time", derive="epoch_seconds"),
    ),
    inputs=(("user_spend", "mean_amount_7d"), ("user_diversity", "last_tx_time"), ("user_merchant", "tx_count_30d"),
            ("merchant_activity", "count_30d"), ("merchant_chargebacks", "chargebacks_30d")),
    outputs={"seconds_since_last_tx": "float64", "amount_vs_user_mean_7d": "float64", "first_tx_at_merchant": "int64",
             "merchant_chargeback_rate_30d": "float64"},
    function=_request_features,
    arrays=True,
    description="seconds since the user's previous transaction; amount against the user's 7-day mean; "
                "first time at this merchant; merchant chargeback rate",
)

VIEWS = (user_spend, user_diversity, user_merchant, merchant_activity, merchant_chargebacks)
ENTITIES = (user, merchant)

fraud_model_v1 = FeatureServiceSpec(
    "fraud_model_v1", views=VIEWS, transforms=(request_features,),
    # The last transaction's absolute time only feeds seconds_since_last_tx: as a model input
    # it would tie the model to the calendar (and drift every day).
    exclude=(("user_diversity", "last_tx_time"),),
    description="the fraud model's features: every view's (but the last transaction's absolute time) and "
                "the request-time ones",
)

SERVICES = (fraud_model_v1,)
