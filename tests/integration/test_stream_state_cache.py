"""The stream's in-memory copy of its state never disagrees with Redis.

``StreamState`` keeps the blobs the job wrote (or read) in memory so a batch and a
publication need no round trip per entity; Redis stays the truth a restarted job reads.
Through real micro-batches (``Processor.apply``, shared Redis, Feast's online writer),
with a copy bounded to fewer entities than the stream has and a publisher forgetting
entities whose buckets all left every window, a state that reads only Redis (a restarted
job) must load the same partials as the running job, entity for entity, at every step.
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
from etl.stream_state import StreamState, entity_id
from skewless.features import store as feast_store
from skewless.features.definitions import Definitions
from skewless.features.dsl import Aggregation as A
from skewless.features.dsl import Entity, EventSource, WindowedView
from tests.isolation import with_overrides

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 1, tzinfo=timezone.utc).timestamp()
user = Entity("user", "user_id")
VIEW = WindowedView("stream_cache", (user,), EventSource("transactions", "transactions", "event_time"), hop="250ms",
                    aggregations=(A("count", "2s"), A("sum", "5s", "amount"),
                                  A("distinct_count", "5s", "merchant_id", name="merchants_5s")))


def _record(i: int, uid: str, tau: float) -> dict:
    value = {"transaction_id": f"{uid}-t{i}", "user_id": uid, "merchant_id": f"m{i % 3}", "amount": 1.25 * (i % 7),
             "currency": "EUR", "country": "DE", "channel": "web", "device_id": "d",
             "event_time": datetime.fromtimestamp(T0 + tau, timezone.utc).isoformat()}
    return {"topic": "transactions", "partition": 0, "offset": i, "key": uid.encode(),
            "value": json.dumps(value).encode(), "timestamp": pd.Timestamp(T0 + tau, unit="s", tz="UTC")}


@pytest.fixture(scope="module")
def project(services, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream-cache")
    name = f"stream_cache_{uuid.uuid4().hex[:8]}"
    settings = with_overrides(services, state_dir=str(tmp / "state"), lake_path=str(tmp / "lake"), feast_project=name)
    feast_store.apply(settings, Definitions(entities=(user,), views=(VIEW,), services=(), module="test"))
    client = redis.Redis.from_url(settings.redis_url)
    yield with_overrides(settings, topics={"transactions": "transactions"}), client, name
    for key in client.scan_iter(match=f"skewless:stream:{name}:*"):
        client.delete(key)


def test_a_restarted_job_reads_the_partials_the_running_job_holds(project):
    settings, client, name = project
    clock = {"now": T0}
    state = StreamState(client, name, cache_entities=3)  # fewer than the stream's 8 users
    proc = Processor(settings, (VIEW,), state, OnlineWriter(settings), clock=lambda: clock["now"])
    users = [f"cu{u}" for u in range(8)]
    eids = [entity_id([u]) for u in users]
    i, checked = 0, 0
    for step in range(30):
        tau = step * 0.4
        batch = [_record(i + j, users[(step * 3 + j) % len(users)], tau + 0.05 * j) for j in range(4 if step < 20 else 0)]
        i += len(batch)
        clock["now"] = T0 + tau + 0.3
        if batch:
            proc.apply(pd.DataFrame(batch), step)
        proc.publisher.publish_due(clock["now"])
        running = state.load(VIEW, eids).sort_values(["user_id", "_k"]).reset_index(drop=True)
        restarted = StreamState(client, name).load(VIEW, eids).sort_values(["user_id", "_k"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(running, restarted, check_exact=True)
        assert all(len(c) <= 3 for c in state.cache.values())
        checked += len(running)
    assert checked > 0
    # Long after the last event every bucket has left every window: the publisher forgets
    # each entity, in Redis and in the copy alike.
    clock["now"] = T0 + 60
    proc.publisher.publish_due(clock["now"])
    assert state.load(VIEW, eids).empty
    assert StreamState(client, name).load(VIEW, eids).empty
    assert not any(client.exists(state.blob_key(VIEW.name, e)) for e in eids)
