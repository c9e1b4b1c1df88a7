"""A steady trickle lands by the batch-age bound, exactly once through kill -9.

At 40 events/s the consumer is never quiet for the 1 s that triggers the idle flush, and
20,000 records per batch would take over eight minutes to fill: without
``ingest.max_batch_age_s`` nothing would land while the trickle lasts. With it (1.5 s
here) batches land every couple of seconds; the consumer is killed (-9) twice in the
middle of the trickle and restarted, and every offset is in the lake exactly once.
"""

from __future__ import annotations

import random
import signal
import threading

import pytest

from ingestion.producer import produce
from tests.integration.ingest_helpers import (
    START, assert_exactly_once, consumer_process, expected_transaction_ids, kill9, manifest_count, run_consumer,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.wallclock]  # ~35 s of a steady trickle

EVENTS, RATE = 1400, 40.0  # ~35 s of traffic, never quiet for a second


def test_a_steady_trickle_lands_by_batch_age_exactly_once_through_kill9(make_settings, settings_file):
    settings = make_settings(partitions=2, ingest={"max_batch_age_s": 1.5})
    cfg = settings_file(settings)
    produced: dict = {}
    trickle = threading.Thread(target=lambda: produced.update(
        produce(settings, events=EVENTS, seed=303, bad_fraction=0.02, start=START, days=2, rate=RATE)))
    rng = random.Random(303)

    p = consumer_process(cfg, until_idle=60)
    trickle.start()
    try:
        # Batches land while the trickle goes on: by age, since it is never idle and no
        # batch fills up.
        assert wait_for(lambda: manifest_count(settings) >= 3 or not trickle.is_alive(), timeout=60)
        assert trickle.is_alive(), "the trickle ended before three batches landed: nothing landed by age"
        landed_while_trickling = manifest_count(settings)
        assert landed_while_trickling >= 3

        # Kill -9 twice in the middle of the trickle, at a random moment after a landing.
        for _ in range(2):
            before = manifest_count(settings)
            assert wait_for(lambda: manifest_count(settings) > before or p.poll() is not None, timeout=60)
            wait_for(lambda: False, timeout=rng.uniform(0.0, 1.0), interval=0.05)
            assert p.poll() is None, "the consumer exited by itself"
            kill9(p)
            assert p.returncode == -signal.SIGKILL
            p = consumer_process(cfg, until_idle=60)
        assert trickle.is_alive(), "the kills should fall inside the trickle; make it longer"
    finally:
        trickle.join(timeout=120)
        if p.poll() is None:
            kill9(p)

    done = run_consumer(cfg, until_idle=3, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_exactly_once(settings, [produced], expected_transaction_ids(produced, EVENTS, 2))
