"""The feature DSL: validation of declarations, the fraud domain's specs, the request-time
transform as a pure function, and the Feast objects built from the declarations."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from feature_repo import specs
from skewless.features.dsl import Aggregation as A
from skewless.features.dsl import Entity, EventSource, WindowedView, parse_duration
from skewless.features.feast_objects import build

user = Entity("user", "user_id")
tx = EventSource("transactions", "transactions", "event_time")


@pytest.mark.parametrize("text,td", [("250ms", timedelta(milliseconds=250)), ("90s", timedelta(seconds=90)), ("5m", timedelta(minutes=5)),
                                     ("24h", timedelta(days=1)), ("30d", timedelta(days=30))])
def test_durations(text, td):
    assert parse_duration(text) == td


@pytest.mark.parametrize("bad", ["", "1w", "h", "1.5h", "-", "0h", "-1h", "ms", "0ms", "1.5ms", "+5s", " 5s"])
def test_bad_durations_are_named(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_windows_must_be_multiples_of_the_hop():
    with pytest.raises(ValueError, match="not a multiple of hop"):
        WindowedView("v", (user,), tx, hop="5m", aggregations=(A("count", "7m"),))


def test_feature_names_are_unique_and_aggregates_need_their_column():
    with pytest.raises(ValueError, match="duplicate"):
        WindowedView("v", (user,), tx, aggregations=(A("count", "1h"), A("count", "1h")))
    with pytest.raises(ValueError, match="needs a column"):
        WindowedView("v", (user,), tx, aggregations=(A("sum", "1h"),))


def test_default_feature_names_and_types():
    v = WindowedView("v", (user,), tx, hop="1m", aggregations=(
        A("count", "1h"), A("mean", "24h", "amount"), A("distinct_count", "24h", "merchant_id"),
        A("last", "1h", "country", dtype="string"), A("last_time", "30d")))
    assert v.features == ["count_1h", "mean_amount_24h", "distinct_count_merchant_id_24h", "last_country_1h",
                          "last_time_30d"]
    assert [a.output_type for a in v.aggregations] == ["int64", "float64", "int64", "string", "float64"]
    assert v.max_window == timedelta(days=30) and v.join_keys == ["user_id"]


def _features(view) -> set[str]:
    return set(view.features)


def test_the_fraud_domain_declares_the_features_the_issue_asks_for():
    assert {f"{f}_{w}" for w in ("1h", "24h", "7d") for f in ("count", "sum_amount", "mean_amount", "max_amount")} \
        <= _features(specs.user_spend)
    assert {"distinct_merchants_24h", "distinct_countries_24h", "last_tx_time"} <= _features(specs.user_diversity)
    assert {"count_1h", "count_24h"} <= _features(specs.merchant_activity)
    cb = specs.merchant_chargebacks
    # Chargebacks count once they are known: by label time, at the transaction's merchant.
    assert cb.source.contract == "labels" and cb.source.time_column == "label_time" and cb.source.where == "is_fraud"
    assert cb.source.enrich == ("transactions", "transaction_id", ("merchant_id",))
    assert cb.max_window == timedelta(days=30)
    outputs = {o for s in specs.SERVICES for t in s.transforms for o in t.outputs}
    assert {"seconds_since_last_tx", "amount_vs_user_mean_7d", "first_tx_at_merchant",
            "merchant_chargeback_rate_30d"} <= outputs


def test_request_transform_is_a_pure_function_of_request_and_features():
    t = specs.request_features
    df = pd.DataFrame({
        "amount": [100.0, 50.0, 10.0], "event_epoch": [1_000.0, 2_000.0, 3_000.0],
        "user_spend__mean_amount_7d": [25.0, np.nan, 10.0],
        "user_diversity__last_tx_time": [940.0, np.nan, 2_999.5],
        "user_merchant__tx_count_30d": [0, np.nan, 3],
        "merchant_activity__count_30d": [10, 0, np.nan],
        "merchant_chargebacks__chargebacks_30d": [2, 0, np.nan],
    })
    before = df.copy()
    out = t.function(df)
    pd.testing.assert_frame_equal(df, before)  # inputs untouched
    assert list(out.columns) == list(t.outputs)
    assert out["seconds_since_last_tx"].tolist()[0] == 60.0 and math.isnan(out["seconds_since_last_tx"][1])
    assert out["amount_vs_user_mean_7d"][0] == 4.0 and math.isnan(out["amount_vs_user_mean_7d"][1])
    assert out["first_tx_at_merchant"].tolist() == [1, 1, 0]
    assert out["merchant_chargeback_rate_30d"].tolist() == [0.2, 0.0, 0.0]
    pd.testing.assert_frame_equal(out, t.function(df))  # deterministic


def test_feast_objects_come_from_the_declarations():
    objs = build(specs.ENTITIES, specs.VIEWS, specs.SERVICES, "/lake")
    for v in specs.VIEWS:
        fv = objs[v.name]
        assert [f.name for f in fv.features] == v.features
        assert fv.entities == [e.name for e in v.entities]
        assert fv.batch_source.path == f"/lake/features/{v.name}"
        assert fv.batch_source.timestamp_field == "event_timestamp"
        assert fv.ttl == timedelta(0)  # rows are emitted when values change: the latest one holds
        assert fv.tags["hop"] == v.hop
    odfv = objs["request_features"]
    assert {f.name for f in odfv.features} == set(specs.request_features.outputs)
    service = objs["fraud_model_v1"]
    assert {p.name for p in service.feature_view_projections} == {v.name for v in specs.VIEWS} | {"request_features"}
    assert {e.name: e.join_key for e in objs.values() if type(e).__name__ == "Entity"} == \
        {"user": "user_id", "merchant": "merchant_id"}


def test_the_fraud_service_leaves_the_absolute_last_time_to_its_transform():
    """The last transaction's unix time is a transform's input, not a model input: the
    service's projection of user_diversity omits it, the on-demand view still reads it."""
    service = specs.fraud_model_v1
    assert service.features_of(specs.user_diversity) == ["distinct_merchants_24h", "distinct_countries_24h",
                                                          "distinct_devices_24h"]
    assert all(service.features_of(v) == v.features for v in specs.VIEWS if v is not specs.user_diversity)
    objects = build(specs.ENTITIES, specs.VIEWS, specs.SERVICES, "/tmp/lake")
    projections = {p.name: [f.name for f in p.features] for p in objects["fraud_model_v1"].feature_view_projections}
    assert "last_tx_time" not in projections["user_diversity"]
    assert projections["user_spend"] == specs.user_spend.features
    odfv = objects["request_features"]
    assert "last_tx_time" in [f.name for f in odfv.source_feature_view_projections["user_diversity"].features]


def test_a_service_excludes_only_features_of_its_own_views():
    from skewless.features.dsl import FeatureServiceSpec

    v = WindowedView("v", (user,), tx, aggregations=(A("count", "1h"), A("last_time", "1h", name="last")))
    with pytest.raises(ValueError, match="not one of its views"):
        FeatureServiceSpec("s", views=(v,), exclude=(("w", "last"),))
    with pytest.raises(ValueError, match="does not have"):
        FeatureServiceSpec("s", views=(v,), exclude=(("v", "nope"),))
    with pytest.raises(ValueError, match="every feature"):
        FeatureServiceSpec("s", views=(v,), exclude=(("v", "last"), ("v", "count_1h")))
    assert FeatureServiceSpec("s", views=(v,), exclude=(("v", "last"),)).features_of(v) == ["count_1h"]
