"""The stream counts exactly what ingestion lands: an event that only the declared batch
checks refuse (``skewless.event_checks``: a channel outside the allowed ones, an event time
far ahead of its Kafka timestamp) is dead-lettered by ingestion, and the stream, which
parses with the same contract, must not count it online either (that would be skew)."""

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


def test_events_the_batch_checks_refuse_are_not_counted_online(services, tmp_path):
    run = uuid.uuid4().hex[:8]
    settings = with_overrides(services, state_dir=str(tmp_path / "state"), lake_path=str(tmp_path / "lake"),
                              feast_project="stream_checks", topics={"transactions": "transactions"})
    feast_store.apply(settings, Definitions(entities=(user,), views=(VIEW,), services=(), module="test"))
    client = redis.Redis.from_url(settings.redis_url)
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
