"""The stream's block parse (``skewless.contract_columns`` over a micro-batch's Arrow records)
changes nothing: on hostile micro-batches it gives the same events, the same count of
invalid records and retries, and — applied through real micro-batches (shared Redis,
Feast's online writer, every view of ``feature_repo``) — the same state, blob for blob and
timer for timer, as parsing every record with ``Contract.parse_message`` and the declared
batch checks (pandera), which is what the stream did before."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import redis

from etl.online_writer import OnlineWriter
from etl.stream import BLOCK_MIN_RECORDS, BatchReport, Processor, _arrow_records
from etl.stream_state import StreamState
from skewless.contracts import CONTRACTS
from skewless.features import store as feast_store
from skewless.features.definitions import load as load_definitions
from tests.isolation import with_overrides

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 1, tzinfo=timezone.utc).timestamp()
TOPICS = {"transactions": "transactions", "labels": "labels"}


def _iso(t: float, tz: str = "Z") -> str:
    s = datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "")
    return s + tz


def _tx(i: int, uid: str, tau: float, **over) -> dict:
    v = {"transaction_id": f"t{i}", "user_id": uid, "merchant_id": f"m{i % 5}", "amount": round(1.25 * (i % 9) + 0.01, 2),
         "currency": "EUR", "country": ("DE", "FR")[i % 2], "channel": ("web", "pos", "app")[i % 3],
         "device_id": f"d{uid}", "event_time": _iso(T0 + tau)}
    if i % 4 == 0:
        v["mcc"] = "5411"
    if i % 10:  # (the simulator always sends it; without it a record goes per event)
        v["schema_version"] = 2
    v.update(over)
    return v


def _rec(topic: str, offset: int, key, value, kafka_t: float, partition: int = 0) -> dict:
    if isinstance(value, dict):
        value = json.dumps(value).encode()
    return {"topic": topic, "partition": partition, "offset": offset, "key": key, "value": value,
            "timestamp": pd.Timestamp(round(kafka_t * 1000), unit="ms", tz="UTC")}  # Kafka's: ms


def _batch(rng: np.random.Generator, start: int, tau0: float, n: int, ahead_s: float) -> list[dict]:
    """``n`` transactions (a few dozen users) and labels, with hostile records among them."""
    out, off = [], start * 10
    for j in range(n):
        i = start + j
        tau = tau0 + j * 0.01
        uid = f"u{rng.integers(0, 30)}"
        out.append(_rec("transactions", off + j, uid.encode() if j % 2 else None, _tx(i, uid, tau), T0 + tau, j % 2))
    off += n
    k = start + n
    hostile = [
        b"{not json", b"", None, b'{"a": 1}{"b": 2}', b"[1, 2]",
        _tx(k + 1, "u1", tau0, channel="fax"),  # only the declared batch checks refuse it
        _tx(k + 2, "u1", tau0, extra=1),  # a field the contract does not name
        _tx(k + 3, "u2", tau0, amount=0.0),  # out of range
        _tx(k + 4, "u2", tau0, currency="eur"),
        _tx(k + 5, "u3", tau0, device_id="dé"),  # valid: non-ASCII text goes per event
        _tx(k + 6, "u3", tau0, event_time=_iso(T0 + tau0 + 7200, "+02:00")),  # valid: another offset
        _tx(k + 7, "u4", tau0, amount=5),  # valid: an integer amount
        _tx(k + 8, "u4", tau0, schema_version=3),  # newer than the contract
        _tx(k + 9, "u5", tau0, transaction_id=f"t{start}"),  # a retry of the batch's first id
        _tx(k + 10, "u5", tau0, mcc=None),  # a null optional field
    ]
    for j, v in enumerate(hostile):
        out.append(_rec("transactions", off + j, b"u1" if j == 6 else None, v, T0 + tau0 + 0.5))
    off += len(hostile)
    # event time far ahead of its Kafka time; a Kafka time unknown (before 2000): passes
    out.append(_rec("transactions", off, None, _tx(k + 20, "u6", tau0), T0 + tau0 - ahead_s - 60))
    out.append(_rec("transactions", off + 1, None, _tx(k + 21, "u6", tau0 + 0.1), 100.0))
    out.append(_rec("transactions", off + 2, b"nobody", _tx(k + 22, "u7", tau0), T0 + tau0))  # key mismatch
    off += 3
    for j in range(0, n, 7):  # labels of some of the batch's transactions, one late and one unknown
        lab = {"schema_version": 1, "transaction_id": f"t{start + j}", "is_fraud": bool(j % 2), "label_time": _iso(T0 + tau0 + 1)}
        out.append(_rec("labels", off + j, f"t{start + j}".encode(), lab, T0 + tau0 + 1))
    out.append(_rec("labels", off + n + 1, None, {"transaction_id": "t-unknown", "is_fraud": True,
                                                  "label_time": _iso(T0 + tau0)}, T0 + tau0))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def _spark_arrow(records: list[dict]) -> pa.Table:
    """The records as Spark's ``toArrow`` gives them (Kafka source schema)."""
    df = pd.DataFrame(records)
    return pa.table({"topic": pa.array(df["topic"], pa.string()), "partition": pa.array(df["partition"], pa.int32()),
                     "offset": pa.array(df["offset"], pa.int64()), "key": pa.array(df["key"], pa.binary()),
                     "value": pa.array(df["value"], pa.binary()),
                     "timestamp": pa.array(df["timestamp"]).cast(pa.timestamp("us", tz="Etc/UTC"))})


@pytest.fixture(scope="module")
def project(services, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream-parse")
    name = f"stream_parse_{uuid.uuid4().hex[:8]}"
    settings = with_overrides(services, state_dir=str(tmp / "state"), lake_path=str(tmp / "lake"), feast_project=name)
    definitions = load_definitions(settings)
    feast_store.apply(settings, definitions)
    client = redis.Redis.from_url(settings.redis_url)
    yield with_overrides(settings, topics=TOPICS), definitions.views, client, name
    for key in client.scan_iter(match=f"skewless:stream:{name}*"):
        client.delete(key)


def test_block_parse_gives_the_per_record_events(project):
    settings, views, client, name = project
    rng = np.random.default_rng(3)
    records = _batch(rng, 1000, 5.0, 300, settings.ingest.max_event_time_ahead_s)
    fast = Processor(settings, views, StreamState(client, f"{name}_pa"), None)
    ref = Processor(settings, views, StreamState(client, f"{name}_pr"), None, blocks=False)
    r_fast, r_ref = BatchReport(0), BatchReport(0)
    got = fast.parse(_spark_arrow(records), r_fast)
    want = ref.parse(pd.DataFrame(records), r_ref)
    assert set(got) == set(want) == {"transactions", "labels"}
    for contract, ev in want.items():
        pd.testing.assert_frame_equal(got[contract], ev, check_like=True, check_exact=True)
    assert (r_fast.invalid, r_fast.retries) == (r_ref.invalid, r_ref.retries)
    assert r_ref.invalid == 12 and r_ref.retries == 1
    # The block reader did take most of them (not everything per event).
    table = _arrow_records(_spark_arrow(records))
    tx = table.filter(pa.compute.equal(table.column("topic"), "transactions"))
    assert tx.num_rows >= BLOCK_MIN_RECORDS
    _, _, block = fast._rows(CONTRACTS["transactions"], tx, BatchReport(0))
    assert block.sum() >= 200


def test_block_parsed_batches_leave_the_per_record_state(project):
    settings, views, client, name = project
    run = uuid.uuid4().hex[:6]
    clock = {"now": T0}
    states = [StreamState(client, f"{name}_a{run}"), StreamState(client, f"{name}_b{run}")]
    writer = OnlineWriter(settings)
    procs = [Processor(settings, views, states[0], writer, clock=lambda: clock["now"]),
             Processor(settings, views, states[1], writer, clock=lambda: clock["now"], blocks=False)]
    rng = np.random.default_rng(11)
    reports = []
    for step in range(4):
        tau0 = 10.0 + step * 4
        records = _batch(rng, 2000 + step * 400, tau0, 250, settings.ingest.max_event_time_ahead_s)
        clock["now"] = T0 + tau0 + 3.3
        reports.append([procs[0].apply(_spark_arrow(records), step), procs[1].apply(pd.DataFrame(records), step)])
        for view in views:
            blobs = []
            for st in states:
                prefix = st.blob_key(view.name, "")
                keys = sorted(k.decode()[len(prefix):] for k in client.scan_iter(match=prefix + "*", count=1000))
                blobs.append(dict(zip(keys, client.mget([prefix + k for k in keys])) if keys else {}))
            assert blobs[0] == blobs[1], view.name
            assert (client.zrange(states[0].due_key(view.name), 0, -1, withscores=True)
                    == client.zrange(states[1].due_key(view.name), 0, -1, withscores=True)), view.name
        assert blobs[0], "the batches left state"
    for a, b in reports:
        assert (a.applied, a.invalid, a.retries, a.parked, a.too_late, a.rows_published) == \
               (b.applied, b.invalid, b.retries, b.parked, b.too_late, b.rows_published)
    assert sum(a.applied for a, _ in reports) > 900
    for st in states:
        st.reset()
