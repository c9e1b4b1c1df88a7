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
