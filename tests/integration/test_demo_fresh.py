"""``skewless demo --fresh`` on a broker that just started: the first group lookup of a new
broker answers COORDINATOR_NOT_AVAILABLE while it creates ``__consumer_offsets`` (CI runs
the demo's test first, right after ``services up``): a retriable answer, retried."""

from __future__ import annotations

import pytest

from cli.demo import _fresh
from tests.integration.test_ingest_kafka_away import private_broker  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def test_fresh_forgets_the_group_on_a_broker_that_just_started(private_broker):  # noqa: F811
    _fresh(private_broker)  # no group was ever there: nothing to delete, and no error


def test_fresh_forgets_the_streams_state_whose_offsets_belong_to_the_deleted_topics(services, tmp_path):
    """The stream starts where its state's offsets say; after the demo deletes the topics,
    new ones may hold more records than those offsets before the job starts, and the job
    could not tell: ``--fresh`` forgets the state (the job then rebuilds it)."""
    import uuid

    import redis

    from etl.stream_state import StreamState
    from tests.isolation import isolated_settings

    settings = isolated_settings(services, tmp_path, feast_project=f"fresh{uuid.uuid4().hex[:8]}")
    client = redis.Redis.from_url(settings.redis_url)
    state = StreamState(client, settings.feast_project)
    client.hset(state.offsets_key(), mapping={f"{settings.topics.transactions}:0": 500})
    client.hset(state.meta, mapping={"batch": 3, "events": 500})
    assert state.offsets()
    _fresh(settings)
    assert state.offsets() == {} and state.status() is None
