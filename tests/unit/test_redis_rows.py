"""``etl.redis_rows`` builds, column-wise, the bytes Feast's Redis writer builds row by row.

Random frames (hypothesis) go through Feast's own conversion (``_convert_arrow_to_proto``,
``_redis_key``, ``Timestamp.FromDatetime``, ``SerializeToString``) and through the
encoder; every key, timestamp and value must be the same bytes. (The integration test
``test_online_writer_bytes`` compares what lands in a real Redis.)
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from etl.redis_rows import Unsupported, ViewEncoder
from skewless.features import feast_objects
from skewless.features.dsl import Aggregation as A
from skewless.features.dsl import Entity, EventSource, WindowedView

user, merchant = Entity("user", "user_id"), Entity("merchant", "merchant_id")
tx = EventSource("transactions", "transactions", "event_time")
VIEW = WindowedView("rr_pair", (user, merchant), tx, hop="1s", aggregations=(
    A("count", "1h"), A("sum", "1h", "amount"), A("last", "1h", "country", name="last_country", dtype="string"),
))


def _config(**online):
    from feast.repo_config import RepoConfig

    return RepoConfig(project="rr_proj", provider="local", registry={"registry_type": "file", "path": "/tmp/rr.db"},
                      online_store={"type": "redis", "connection_string": "localhost:6379", "skip_dedup": True, **online},
                      offline_store={"type": "file"}, entity_key_serialization_version=3)


@pytest.fixture(scope="module")
def fv():
    from feast import Entity as FeastEntity, ValueType

    from feast import Field
    from feast.types import String

    ents = {e.name: FeastEntity(name=e.name, join_keys=[e.join_key], value_type=ValueType.STRING) for e in (user, merchant)}
    view = feast_objects.feature_view(VIEW, ents, "/tmp/lake")
    # what ``apply`` infers into the registry's copy (the writer reads the view from there)
    view.entity_columns = [Field(name="user_id", dtype=String), Field(name="merchant_id", dtype=String)]
    return view


def feast_bytes(fv, config, df: pd.DataFrame):
    import pyarrow as pa
    from feast import utils
    from feast.infra.online_stores.helpers import _redis_key
    from google.protobuf.timestamp_pb2 import Timestamp

    join_keys = {e.name: e.dtype.to_value_type() for e in fv.entity_columns}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = utils._convert_arrow_to_proto(pa.Table.from_pandas(df), fv, join_keys)
    keys, stamps, values = [], [], [[] for _ in fv.features]
    for key, vals, t, _ in rows:
        keys.append(_redis_key(config.project, key, entity_key_serialization_version=3))
        ts = Timestamp()
        ts.FromDatetime(utils.make_tzaware(t))
        stamps.append(ts.SerializeToString())
        for i, f in enumerate(fv.features):
            values[i].append(vals[f.name].SerializeToString())
    return keys, stamps, values


names = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 5e-324, 1e308])
ints = st.integers(-(2 ** 63), 2 ** 63 - 1) | st.integers(-200, 200)
times = st.integers(-(10 ** 18), 4 * 10 ** 18)  # ns since 1970, either side of it


@st.composite
def frames(draw):
    n = draw(st.integers(1, 30))
    row = st.tuples(names, names, times, ints, floats, st.none() | names)
    rows = draw(st.lists(row, min_size=n, max_size=n))
    df = pd.DataFrame(rows, columns=["user_id", "merchant_id", "ns", "count_1h", "sum_amount_1h", "last_country"])
    df["event_timestamp"] = pd.to_datetime(df.pop("ns"), unit="ns", utc=True)
    if draw(st.booleans()):  # nullable ints: Arrow int64 with nulls, floats in Feast's conversion
        small = df["count_1h"].clip(-(2 ** 53), 2 ** 53)
        df["count_1h"] = pd.array(small, dtype="Int64")
        df.loc[df.index[:: draw(st.integers(1, 4))], "count_1h"] = pd.NA
    return df


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(df=frames())
def test_same_bytes_as_feasts_conversion(fv, df):
    config = _config()
    encoder = ViewEncoder.for_view(fv, config)
    assert encoder is not None
    want = feast_bytes(fv, config, df)
    assert all(k.startswith(b"\x02\x00\x00\x00") for k in want[0])  # two join keys in every key
    assert encoder.rows(df) == want



def test_what_it_does_not_cover(fv):
    assert ViewEncoder.for_view(fv, _config(skip_dedup=False)) is None  # Feast's read-compare-write
    assert ViewEncoder.for_view(fv, _config(redis_type="redis_cluster")) is None
    enc = ViewEncoder.for_view(fv, _config())
    base = pd.DataFrame({"user_id": ["u"], "merchant_id": ["m"], "event_timestamp": [pd.Timestamp("2026-01-01", tz="UTC")],
                         "count_1h": [1], "sum_amount_1h": [1.0], "last_country": ["FR"]})
    enc.rows(base)
    for bad in (base.assign(user_id=[None]),  # Feast refuses a null join key
                base.assign(event_timestamp=[pd.NaT]),
                base.assign(count_1h=[2.0 ** 63]),  # Feast refuses: out of int64
                base.assign(last_country=[5]),  # Feast's str(5): left to Feast
                base.assign(sum_amount_1h=["1.0"]),
                base.assign(event_timestamp=[1.7e9])):
        with pytest.raises(Unsupported):
            enc.rows(bad)


def test_key_ttl_adds_expire(fv):
    enc = ViewEncoder.for_view(fv, _config(key_ttl_seconds=3600))
    df = pd.DataFrame({"user_id": ["u", "v"], "merchant_id": ["m", "m"],
                       "event_timestamp": pd.to_datetime([1, 2], unit="s", utc=True),
                       "count_1h": [1, 2], "sum_amount_1h": [1.0, np.nan], "last_country": ["FR", None]})
    enc.script = False  # one HSET and one EXPIRE per row
    commands, replies = enc.commands(df)
    assert replies == 4 and commands.count(b"\r\nEXPIRE\r\n") == 2 and commands.count(b"$4\r\n3600\r\n") == 2
    enc.script = True  # one EVAL whose script runs them: the TTL is its argument, one reply
    commands, replies = enc.commands(df)
    assert replies == 1 and commands.count(b"\r\nEVAL\r\n") == 1 and b"EXPIRE" in commands
    assert commands.count(b"$4\r\n3600\r\n") == 1
