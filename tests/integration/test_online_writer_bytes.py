"""The stream's online writer writes Feast's bytes, exactly.

The same random frames (int64, double and string features with nulls, NaN, ±0, ±inf,
huge values; one join key and two; decayed rows whose features are all null; repeated
entities and timestamps, sub-microsecond and pre-1970 times) are written through Feast's
``provider.ingest_df`` into one database of a private Redis and through the column-wise
writer into another. Every key, every hash field (in order), the ``DUMP`` of every key
and its TTL must be equal byte for byte, and ``FeatureStore.get_online_features`` must
read the same values from both. The comparison itself is checked to catch a swapped
field order and a one-byte change.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
import redis

from etl.online_writer import OnlineWriter
from skewless.features import store as feast_store
from skewless.features.definitions import Definitions
from skewless.features.dsl import Aggregation as A
from skewless.features.dsl import Entity, EventSource, WindowedView
from skewless.services import redis_server
from skewless.services.server_process import free_port
from tests.isolation import with_overrides

pytestmark = pytest.mark.integration

user = Entity("user", "user_id")
merchant = Entity("merchant", "merchant_id")
tx = EventSource("transactions", "transactions", "event_time")
ONE = WindowedView("wb_user", (user,), tx, hop="1s", aggregations=(
    A("count", "1h"), A("sum", "1h", "amount"), A("mean", "1h", "amount"), A("max", "24h", "amount"),
    A("distinct_count", "24h", "merchant_id", name="merchants_24h"),
    A("last", "24h", "country", name="last_country", dtype="string"), A("last_time", "30d", name="last_tx_time"),
))
TWO = WindowedView("wb_pair", (user, merchant), tx, hop="1s", aggregations=(
    A("count", "30d", name="tx_count_30d"), A("min", "30d", "amount"),
))
FEEDS = {v.name: v for v in (ONE, TWO)}
DB_FEAST, DB_FAST, DB_MUTANT = 1, 2, 3  # and 4
DB_COLS_REF, DB_COLS = 5, 6


@pytest.fixture(scope="module")
def stores(services, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("writer-bytes")
    port = free_port()
    own = with_overrides(services, state_dir=str(tmp / "redis-state"), services={"redis_port": port})
    assert redis_server.up(own)["started"]
    base = with_overrides(services, state_dir=str(tmp / "state"), lake_path=str(tmp / "lake"),
                          feast_project=f"wb{uuid.uuid4().hex[:8]}")
    ref = with_overrides(base, redis_url=f"redis://127.0.0.1:{port}/{DB_FEAST}")
    fast = with_overrides(base, redis_url=f"redis://127.0.0.1:{port}/{DB_FAST}")
    feast_store.apply(ref, Definitions(entities=(user, merchant), views=(ONE, TWO), services=(), module="test"))
    try:
        yield {"port": port, "ref": ref, "fast": fast,
               "ref_writer": OnlineWriter(ref, fast=False), "fast_writer": OnlineWriter(fast)}
    finally:
        redis_server.down(own)


def _client(port: int, db: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, db=db)


def differences(a: redis.Redis, b: redis.Redis) -> list[str]:
    """Every way the two databases differ: keys, fields in order, values, DUMP, TTL."""
    out = []
    ka, kb = set(a.scan_iter(count=1000)), set(b.scan_iter(count=1000))
    if ka != kb:
        out.append(f"keys: {len(ka - kb)} only in the first, {len(kb - ka)} only in the second")
    for k in sorted(ka & kb):
        ha, hb = list(a.hgetall(k).items()), list(b.hgetall(k).items())
        if ha != hb:
            out.append(f"{k!r}: fields {ha} != {hb}")
        elif a.dump(k) != b.dump(k):
            out.append(f"{k!r}: DUMP differs")
        if a.ttl(k) != b.ttl(k):
            out.append(f"{k!r}: TTL {a.ttl(k)} != {b.ttl(k)}")
    return out


def _ids(rng, n: int, pool: int, prefix: str) -> np.ndarray:
    names = [f"{prefix}{i}" for i in range(pool - 3)] + ["", "é-ü-✓", "x" * 300]
    return np.array([names[i] for i in rng.integers(0, pool, n)], dtype=object)


def _floats(rng, n: int) -> np.ndarray:
    special = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e308, -5e-324, 2.0 ** 53 + 1, 0.1, -123.456])
    x = rng.normal(0, 1e3, n)
    pick = rng.random(n) < 0.3
    x[pick] = special[rng.integers(0, len(special), pick.sum())]
    return x


def _ints(rng, n: int) -> np.ndarray:
    special = np.array([0, 1, -1, 127, 128, 16383, 16384, 2 ** 62, -(2 ** 62), 2 ** 63 - 1, -(2 ** 63)], dtype=np.int64)
    x = rng.integers(0, 50, n).astype(np.int64)
    pick = rng.random(n) < 0.3
    x[pick] = special[rng.integers(0, len(special), pick.sum())]
    return x


def _times(rng, n: int) -> pd.Series:
    base = np.int64(datetime(2026, 5, 1, tzinfo=timezone.utc).timestamp()) * 10 ** 9
    ns = base + rng.integers(0, 5, n) * 10 ** 9  # repeated timestamps
    sub = rng.random(n) < 0.2
    ns[sub] += rng.integers(1, 10 ** 9, sub.sum())  # sub-second, sub-microsecond
    old = rng.random(n) < 0.05
    ns[old] = rng.integers(-(10 ** 17), 10 ** 6, old.sum())  # before 1970, and 1970-01-01 itself
    return pd.Series(pd.to_datetime(ns, unit="ns", utc=True))


def frame(view: WindowedView, rng, n: int, *, decayed: float = 0.2, nullable_ints: bool = False) -> pd.DataFrame:
    """Rows as ``etl.windows.view_rows`` makes them (keys, event_timestamp, features)."""
    cols: dict = {k: _ids(rng, n, 40, k[0]) for k in view.join_keys}
    cols["event_timestamp"] = _times(rng, n)
    dead = rng.random(n) < decayed  # a decayed row: every feature null
    for a in view.aggregations:
        t = a.output_type
        if t == "int64":
            v = _ints(rng, n)
            if nullable_ints:  # pandas' nullable Int64: Arrow int64 with nulls, floats in Feast
                v[v == 2 ** 63 - 1] = 2 ** 53 + 1  # as a float 2**63, which Feast refuses; this one rounds
                s = pd.array(v, dtype="Int64")
                s[dead | (rng.random(n) < 0.1)] = pd.NA
                cols[a.feature_name] = s
            else:
                cols[a.feature_name] = np.where(dead, 0, v)
        elif t == "float64":
            v = _floats(rng, n)
            v[dead] = np.nan
            cols[a.feature_name] = v
        else:
            vals = np.array(["FR", "DE", "", "ü" * 70, "x" * 200], dtype=object)[rng.integers(0, 5, n)]
            vals[dead | (rng.random(n) < 0.1)] = None
            cols[a.feature_name] = vals
    return pd.DataFrame(cols)


def write_both(stores, view: str, df: pd.DataFrame) -> None:
    stores["ref_writer"].write(view, df)
    stores["fast_writer"].write(view, df)


def test_same_bytes_as_feast_for_random_frames(stores):
    before = stores["fast_writer"].rows_fast
    for seed in range(12):
        rng = np.random.default_rng(seed)
        for view in (ONE, TWO):
            n = int(rng.integers(1, 400))
            write_both(stores, view.name, frame(view, rng, n, decayed=0.2 if seed % 3 else 1.0,
                                                nullable_ints=seed % 4 == 1))
    port = stores["port"]
    assert differences(_client(port, DB_FEAST), _client(port, DB_FAST)) == []
    assert _client(port, DB_FAST).dbsize() > 100
    assert stores["fast_writer"].rows_fast > before  # the column-wise path wrote them, not Feast's


def test_the_columns_path_writes_the_same_bytes(stores):
    """``write_columns`` — the stream's rows as NumPy columns (``rows_at(..., frame=False)``:
    event_timestamp as datetime64, no frame) — writes what Feast writes for the frame."""
    port = stores["port"]
    ref = OnlineWriter(with_overrides(stores["ref"], redis_url=f"redis://127.0.0.1:{port}/{DB_COLS_REF}"), fast=False)
    cols = OnlineWriter(with_overrides(stores["fast"], redis_url=f"redis://127.0.0.1:{port}/{DB_COLS}"))
    for seed in range(8):
        rng = np.random.default_rng(100 + seed)
        for view in (ONE, TWO):
            df = frame(view, rng, int(rng.integers(1, 300)), decayed=0.2 if seed % 3 else 1.0)
            ref.write(view.name, df)
            columns = {c: df[c].to_numpy() for c in df.columns}
            columns["event_timestamp"] = df["event_timestamp"].dt.tz_localize(None).to_numpy()
            assert cols.write_columns(view.name, columns) == len(df)
    assert differences(_client(port, DB_COLS_REF), _client(port, DB_COLS)) == []
    assert _client(port, DB_COLS).dbsize() > 50
    assert cols.rows_fast > 0 and cols.rows_feast == 0


def test_feast_reads_the_same_values_back(stores):
    rng = np.random.default_rng(99)
    frames = {v.name: frame(v, rng, 300) for v in (ONE, TWO)}
    for name, df in frames.items():
        write_both(stores, name, df)
    ref = feast_store.feature_store(stores["ref"])
    fast = feast_store.feature_store(stores["fast"])
    for view in (ONE, TWO):
        df = frames[view.name]
        last = df.drop_duplicates(view.join_keys, keep="last")
        entity_rows = last[view.join_keys].to_dict("records")
        feats = [f"{view.name}:{f}" for f in view.features]
        got_ref = ref.get_online_features(features=feats, entity_rows=entity_rows).to_dict()
        got_fast = fast.get_online_features(features=feats, entity_rows=entity_rows).to_dict()
        assert got_fast.keys() == got_ref.keys()
        for f in view.features:
            want = [None if (v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))) else v
                    for v in last[f].tolist()]
            for w, a, b in zip(want, got_ref[f], got_fast[f]):
                assert _same(a, b) and _same(w, b), (f, w, a, b)


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, float) or isinstance(b, float):
        return float(a) == float(b) and math.copysign(1, float(a)) == math.copysign(1, float(b))
    return a == b


def test_equal_timestamp_overwrites_and_decay_clears(stores):
    """skip_dedup: a row whose time equals the stored one still replaces it; a decayed
    (all-null) row replaces values with nulls."""
    t = pd.Timestamp("2026-05-01T00:00:00Z")
    keys = {"user_id": ["u-eq"], "event_timestamp": [t]}
    first = pd.DataFrame({**keys, "count_1h": [1], "sum_amount_1h": [5.0], "mean_amount_1h": [5.0],
                          "max_amount_24h": [5.0], "merchants_24h": [1], "last_country": ["FR"], "last_tx_time": [1.5]})
    again = first.assign(count_1h=[2], last_country=["DE"])
    dead = first.assign(count_1h=[0], sum_amount_1h=[0.0], mean_amount_1h=[np.nan], max_amount_24h=[np.nan],
                        merchants_24h=[0], last_country=[None], last_tx_time=[np.nan])
    fast = feast_store.feature_store(stores["fast"])
    for df, want in ((first, (1, "FR", 5.0)), (again, (2, "DE", 5.0)), (dead, (0, None, None))):
        write_both(stores, ONE.name, df)
        got = fast.get_online_features(features=[f"{ONE.name}:count_1h", f"{ONE.name}:last_country",
                                                 f"{ONE.name}:mean_amount_1h"], entity_rows=[{"user_id": "u-eq"}]).to_dict()
        assert (got["count_1h"][0], got["last_country"][0], got["mean_amount_1h"][0]) == want
    port = stores["port"]
    assert differences(_client(port, DB_FEAST), _client(port, DB_FAST)) == []


def test_frames_it_does_not_cover_go_through_feast(stores):
    """A string feature holding a number, an int feature as text: Feast's own conversion
    decides (str(5) == "5"; a refusal stays Feast's refusal)."""
    rng = np.random.default_rng(7)
    df = frame(ONE, rng, 20)
    df["last_country"] = pd.Series([5] * 20, dtype=object)
    before = stores["fast_writer"].rows_feast
    write_both(stores, ONE.name, df)
    assert stores["fast_writer"].rows_feast == before + 20
    port = stores["port"]
    assert differences(_client(port, DB_FEAST), _client(port, DB_FAST)) == []


def test_the_comparison_catches_field_order_and_a_byte(stores):
    port = stores["port"]
    a, b = _client(port, DB_MUTANT), _client(port, DB_MUTANT + 1)
    a.flushdb(), b.flushdb()
    df = frame(ONE, np.random.default_rng(3), 5, decayed=0.0).assign(last_country="FR")
    for db in (DB_MUTANT, DB_MUTANT + 1):  # Feast's writer into both
        OnlineWriter(with_overrides(stores["ref"], redis_url=f"redis://127.0.0.1:{port}/{db}"), fast=False).write(ONE.name, df)
    assert differences(a, b) == [] and a.dbsize() > 0
    # a small hash keeps its fields in insertion order (listpack): the order is part of its bytes
    k = next(k for k in a.scan_iter() if a.object("encoding", k) == b"listpack")
    fields = list(a.hgetall(k).items())
    b.delete(k)
    b.hset(k, mapping=dict(reversed(fields)))  # same fields and values, another order
    assert any("fields" in d for d in differences(a, b))
    b.delete(k)
    f, v = fields[1]
    b.hset(k, mapping={**dict(fields), f: v[:-1] + bytes([v[-1] ^ 1])})  # one bit of one value
    assert differences(a, b)
    b.delete(k)
    b.hset(k, mapping=dict(fields))  # as it was
    assert differences(a, b) == []
    b.expire(k, 60)
    assert differences(a, b)
