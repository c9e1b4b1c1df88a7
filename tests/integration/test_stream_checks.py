"""What the stream tells readers is true.

* It counts exactly what ingestion lands: an event that only the declared batch checks
  refuse (``skewless.event_checks``: a channel outside the allowed ones, an event time far
  ahead of its Kafka timestamp) is dead-lettered by ingestion, and the stream, which parses
  with the same contract, must not count it online either (that would be skew).
* Its ``published_at`` (the instant the online values are exact at, which the demo and
  ``check consistency`` trust) never covers a boundary whose rows are still being written.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import pandas as pd
import pytest
import redis

from etl.online_writer import OnlineWriter
from etl.stream import Processor
from etl.stream_state import StreamState
from skewless.features import store as feast_store
from skewless.features.definitions import Definitions
from skewless.features.dsl import Aggregation as A
from skewless.features.dsl import Entity, EventSource, WindowedView
from tests.isolation import with_overrides

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 1, tzinfo=timezone.utc).timestamp()
user = Entity("user", "user_id")
VIEW = WindowedView("stream_checks", (user,), EventSource("transactions", "transactions", "event_time"), hop="1s",
                    aggregations=(A("count", "1h"),))


def _record(i: int, uid: str, tau: float, *, channel: str = "web", kafka_at: float | None = None) -> dict:
    value = {"transaction_id": f"{uid}-t{i}", "user_id": uid, "merchant_id": "m1", "amount": 10.0,
             "currency": "EUR", "country": "DE", "channel": channel, "device_id": "d",
             "event_time": datetime.fromtimestamp(T0 + tau, timezone.utc).isoformat()}
    return {"topic": "transactions", "partition": 0, "offset": i, "key": uid.encode(),
            "value": json.dumps(value).encode(),
            "timestamp": pd.Timestamp(T0 + (tau if kafka_at is None else kafka_at), unit="s", tz="UTC")}


def _setup(services, tmp_path):
    settings = with_overrides(services, state_dir=str(tmp_path / "state"), lake_path=str(tmp_path / "lake"),
                              feast_project="stream_checks", topics={"transactions": "transactions"})
    feast_store.apply(settings, Definitions(entities=(user,), views=(VIEW,), services=(), module="test"))
    return settings, redis.Redis.from_url(settings.redis_url)


def test_events_the_batch_checks_refuse_are_not_counted_online(services, tmp_path):
    run = uuid.uuid4().hex[:8]
    settings, client = _setup(services, tmp_path)
    state = StreamState(client, f"stream_checks_{run}")
    clock = {"now": T0 + 10}
    proc = Processor(settings, (VIEW,), state, OnlineWriter(settings), clock=lambda: clock["now"])
    good, bad_channel, ahead = f"g{run}", f"c{run}", f"a{run}"
    ahead_s = settings.ingest.max_event_time_ahead_s
    records = [
        _record(0, good, 1.0), _record(1, good, 2.0),
        _record(2, bad_channel, 1.0, channel="fax"), _record(3, bad_channel, 2.0),
        # event time more than the allowed time after the message's Kafka timestamp
        _record(4, ahead, 3.0, kafka_at=3.0 - ahead_s - 60), _record(5, ahead, 4.0),
    ]
    try:
        report = proc.apply(pd.DataFrame(records), 0)
        assert report.invalid == 2 and report.applied == 4
        clock["now"] = T0 + 20
        proc.publisher.publish_due(clock["now"])
        got = feast_store.feature_store(settings).get_online_features(
            features=[f"{VIEW.name}:count_1h"],
            entity_rows=[{"user_id": u} for u in (good, bad_channel, ahead)]).to_dict()
        assert got["count_1h"] == [2, 1, 1]
    finally:
        state.reset()


class _Watching(OnlineWriter):
    """Feast's writer, noting what the stream's status said at each write."""

    def __init__(self, settings, state: StreamState):
        super().__init__(settings)
        self.state, self.seen = state, []

    def write(self, view: str, rows: pd.DataFrame) -> int:
        published = self.state.r.hget(self.state.meta, "published_at")
        self.seen.append((rows["event_timestamp"].max().timestamp(), float(published) if published else None))
        return super().write(view, rows)

    def write_columns(self, view: str, rows: dict) -> int:  # what the publisher calls (NumPy columns)
        published = self.state.r.hget(self.state.meta, "published_at")
        newest = rows["event_timestamp"].max().astype("datetime64[us]").astype("int64") / 1e6
        self.seen.append((newest, float(published) if published else None))
        return super().write_columns(view, rows)


def test_published_at_never_covers_a_boundary_whose_rows_are_being_written(services, tmp_path):
    run = uuid.uuid4().hex[:8]
    settings, client = _setup(services, tmp_path)
    state = StreamState(client, f"stream_checks_{run}")
    clock = {"now": T0 + 10.5}
    writer = _Watching(settings, state)
    proc = Processor(settings, (VIEW,), state, writer, clock=lambda: clock["now"])
    try:
        proc.apply(pd.DataFrame([_record(0, f"u{run}", 5.0)]), 0)  # visible from T0 + 6
        proc.publisher.publish_due(T0 + 10.5)  # the job's loop: values exact at T0 + 10.5
        # A batch that started after that publication applies an event from before it
        # (its boundary, T0 + 10, is already covered by published_at).
        clock["now"] = T0 + 10.6
        proc.apply(pd.DataFrame([_record(1, f"u{run}", 9.9)]), 1)
        boundary, published = writer.seen[-1]
        assert boundary == T0 + 10 and published is not None and published < boundary, writer.seen
        assert state.status().published_at == T0 + 10.6  # and exact again once written
    finally:
        state.reset()


def test_records_read_again_after_a_restart_are_applied_once_by_their_offsets(services, tmp_path):
    """The state keeps the next offset per partition in the same transaction as the batch:
    a restarted job (a new ``Processor`` on the same state, Spark reading from an older
    position) skips what was applied, without the event-id dedupe (switched off here)."""
    run = uuid.uuid4().hex[:8]
    settings, client = _setup(services, tmp_path)
    settings = with_overrides(settings, stream={"dedupe_horizon_s": 0})
    state = StreamState(client, f"stream_checks_{run}")
    clock = {"now": T0 + 30}
    uid = f"o{run}"

    def recs(lo: int, hi: int, partition: int) -> list[dict]:
        return [{**_record(i, uid, 1.0 + 0.1 * i), "partition": partition,
                 "value": _record(1000 * partition + i, uid, 1.0 + 0.1 * i)["value"]} for i in range(lo, hi)]

    try:
        first = Processor(settings, (VIEW,), state, OnlineWriter(settings), clock=lambda: clock["now"])
        assert first.apply(pd.DataFrame(recs(0, 10, 0)), 0).applied == 10
        assert state.offsets() == {("transactions", 0): 10}
        again = Processor(settings, (VIEW,), state, OnlineWriter(settings), clock=lambda: clock["now"])
        report = again.apply(pd.DataFrame(recs(5, 15, 0) + recs(0, 3, 1)), 0)  # 5 of partition 0 seen before
        assert (report.replayed, report.retries, report.applied) == (5, 0, 8)
        assert state.offsets() == {("transactions", 0): 15, ("transactions", 1): 3}
        whole = again.apply(pd.DataFrame(recs(0, 15, 0)), 1)
        assert whole.skipped and whole.replayed == 15 and whole.applied == 0
        again.publisher.publish_due(clock["now"])
        got = feast_store.feature_store(settings).get_online_features(
            features=[f"{VIEW.name}:count_1h"], entity_rows=[{"user_id": uid}]).to_dict()
        assert got["count_1h"] == [18]
        assert state.status().events == 18
    finally:
        state.reset()
