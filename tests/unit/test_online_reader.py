"""Decoding Feast's Redis hash layout into values and statuses (the serving read path).

The replies are built with Feast's own protos, exactly as its Redis store writes them;
``tests/integration/test_serving.py`` checks the whole path against a real Redis."""

from __future__ import annotations

import numpy as np
import pandas as pd
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

from serving.online_reader import NOT_FOUND, NULL_VALUE, OUTSIDE_MAX_AGE, PRESENT, FeaturePlan, _OnDemand, _ViewRead

NOW = 1_800_000_000.0


def _ts(seconds: float) -> bytes:
    return Timestamp(seconds=int(seconds), nanos=int(round((seconds % 1) * 1e9))).SerializeToString()


def _plan(ttl_s: float | None = None, on_demand: list | None = None) -> FeaturePlan:
    view = _ViewRead("spend", ("user_id",), ("string_val",), ["count", "mean"], [b"h1", b"h2", b"_ts:spend"],
                     ttl_s, [True, True])
    names = ["spend__count", "spend__mean"] + [f"{o.name}__{f}" for o in on_demand or [] for f in o.outputs]
    return FeaturePlan([view], on_demand or [], names, "proj", 3)


def test_present_null_and_not_found_rows():
    plan = _plan()
    rows = [{"user_id": "a"}, {"user_id": "b"}, {"user_id": "c"}]
    replies = [
        [Value(int64_val=3).SerializeToString(), Value(double_val=2.5).SerializeToString(), _ts(NOW - 10.25)],
        [Value(int64_val=0).SerializeToString(), Value().SerializeToString(), _ts(NOW - 5)],  # mean of nothing
        [None, None, None],  # never materialized for this entity
    ]
    out = plan.decode(rows, replies, now=NOW)
    assert out.values == [[3, 2.5], [0, None], [None, None]]
    assert out.statuses == [[PRESENT, PRESENT], [PRESENT, NULL_VALUE], [NOT_FOUND, NOT_FOUND]]
    assert out.event_timestamps[0] == [NOW - 10.25, NOW - 10.25] and out.event_timestamps[2] == [None, None]
    assert out.view_timestamps == [{"spend": NOW - 10.25}, {"spend": NOW - 5}, {}]


def test_rows_older_than_the_view_ttl_are_outside_max_age_and_have_no_value():
    plan = _plan(ttl_s=60)
    replies = [[Value(int64_val=3).SerializeToString(), Value(double_val=1.0).SerializeToString(), _ts(NOW - 61)],
               [Value(int64_val=4).SerializeToString(), Value(double_val=1.0).SerializeToString(), _ts(NOW - 59)]]
    out = plan.decode([{"user_id": "a"}, {"user_id": "b"}], replies, now=NOW)
    assert out.statuses == [[OUTSIDE_MAX_AGE] * 2, [PRESENT] * 2]
    assert out.values == [[None, None], [4, 1.0]]


def test_on_demand_features_get_arrays_or_a_dataframe_as_declared():
    seen = []

    def ratio(cols):
        seen.append(type(cols))
        out = {"ratio": np.asarray(cols["amount"], dtype="float64") / np.asarray(cols["spend__mean"], dtype="float64")}
        return pd.DataFrame(out) if isinstance(cols, pd.DataFrame) else out

    replies = [[Value(int64_val=1).SerializeToString(), Value(double_val=4.0).SerializeToString(), _ts(NOW)],
               [None, None, None]]
    rows = [{"user_id": "a", "amount": 10.0}, {"user_id": "b", "amount": 10.0}]
    for arrays in (True, False):
        plan = _plan(on_demand=[_OnDemand("req", ratio, ["ratio"], ["amount"], arrays)])
        out = plan.decode(rows, replies, now=NOW)
        assert [r[-1] for r in out.values] == [2.5, None]  # NaN (unknown user) is reported as null
        assert [r[-1] for r in out.statuses] == [PRESENT, NULL_VALUE]  # with no value: not PRESENT
    assert seen == [dict, pd.DataFrame]


def test_redis_keys_are_feasts_entity_keys():
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey

    pair = _ViewRead("um", ("merchant_id", "user_id"), ("string_val", "string_val"), ["n"], [b"h", b"_ts:um"],
                     None, [True])
    numeric = _ViewRead("acct", ("account",), ("int64_val",), ["n"], [b"h", b"_ts:acct"], None, [True])
    plan = FeaturePlan([pair, numeric], [], ["um__n", "acct__n"], "proj", 3)
    rows = [{"user_id": "u1", "merchant_id": "m-ü", "account": 2**40}, {"user_id": "", "merchant_id": "x" * 300,
                                                                       "account": -1}]
    keys = [k for k, _ in plan.commands(rows)]
    expected = []
    for view in (pair, numeric):
        for row in rows:
            values = [Value(**{t: row[k]}) for k, t in zip(view.join_keys, view.key_types)]
            expected.append(serialize_entity_key(EntityKey(join_keys=list(view.join_keys), entity_values=values), 3)
                            + b"proj")
    assert keys == expected
