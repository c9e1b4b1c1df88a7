"""Send simulated events (and, on request, malformed ones) to Kafka."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Callable

import numpy as np
import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError

from skewless.contracts import LABELS, TRANSACTIONS
from ingestion.simulator import bad_messages, default_start, drift_start_at, simulate
from skewless.topics import ensure_topics
from skewless.errors import ServiceError
from skewless.settings import Settings


def make_producer(settings: Settings) -> KafkaProducer:
    try:
        return KafkaProducer(
            **settings.kafka.client_config(),
            acks="all",
            enable_idempotence=True,
            linger_ms=20,
            batch_size=512 * 1024,
            max_request_size=8 * 1024 * 1024,
        )
    except KafkaError as exc:
        raise ServiceError(
            f"no Kafka broker answers at {','.join(settings.kafka.bootstrap_servers)}",
            "start one with: skewless services up",
        ) from exc


def _interleave(good: list[tuple[bytes, bytes]], bad: list[bytes], rng: np.random.Generator) -> list[tuple[bytes | None, bytes]]:
    """Put the bad messages at random places among the good ones."""
    if not bad:
        return list(good)
    slots = set(rng.choice(len(good) + len(bad), size=len(bad), replace=False).tolist())
    out: list[tuple[bytes | None, bytes]] = []
    gi = bi = 0
    for pos in range(len(good) + len(bad)):
        if pos in slots:
            out.append((None, bad[bi]))
            bi += 1
        else:
            out.append(good[gi])
            gi += 1
    return out


def produce(
    settings: Settings,
    events: int,
    seed: int = 42,
    bad_fraction: float = 0.0,
    start: datetime | None = None,
    days: int = 7,
    rate: float | None = None,
    schema_version: int = 2,
    on_progress: Callable[[int, int], None] | None = None,
    drift: str | None = None,
    drift_from: datetime | None = None,
    drift_fraction: float | None = None,
) -> dict[str, Any]:
    """Simulate ``events`` transactions and their labels and send them; returns counts per topic.

    ``drift`` (a kind of ``ingestion.simulator.DRIFT_KINDS``) changes the traffic from
    ``drift_from``, or ``drift_fraction`` of the way through the period (default: from the
    start)."""
    if not 0.0 <= bad_fraction < 1.0:
        raise ValueError("bad_fraction must be in [0, 1)")
    start = start or default_start(days)
    drift_start = None
    if drift is not None:
        drift_start = drift_start_at(start, days, drift_from, drift_fraction)
    elif drift_from is not None or drift_fraction is not None:
        raise ValueError("a drift start needs a drift kind")
    sim = simulate(events, seed, start, days, schema_version=schema_version, drift=drift, drift_start=drift_start)
    rng = np.random.default_rng(seed + 1)
    plan: dict[str, tuple[list, int]] = {}
    for contract, records in ((TRANSACTIONS, sim.transactions), (LABELS, sim.labels)):
        topic = getattr(settings.topics, contract.name)
        good = [(r[contract.key_field].encode(), orjson.dumps(r)) for r in records]
        n_bad = int(round(len(good) * bad_fraction / (1 - bad_fraction))) if good else 0
        bad = [b for _, b in bad_messages(n_bad, seed, contract.name)]
        plan[topic] = (_interleave(good, bad, rng), n_bad)
    ensure_topics(settings, list(plan))

    producer = make_producer(settings)
    total = sum(len(msgs) for msgs, _ in plan.values())
    sent = 0
    failures: list[BaseException] = []
    t0 = time.perf_counter()
    try:
        for topic, (messages, _) in plan.items():
            for key, value in messages:
                producer.send(topic, key=key, value=value).add_errback(failures.append)
                sent += 1
                if rate:
                    # Pace by the clock: sleep when ahead of the requested rate.
                    ahead = sent / rate - (time.perf_counter() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
                if on_progress and sent % 5000 == 0:
                    on_progress(sent, total)
        producer.flush(timeout=120)
    except KafkaError as exc:
        raise ServiceError(f"producing to Kafka failed: {exc}") from exc
    finally:
        producer.close(timeout=30)
    if failures:
        raise ServiceError(f"{len(failures)} messages could not be delivered: {failures[0]}")
    if on_progress:
        on_progress(total, total)
    elapsed = time.perf_counter() - t0
    topics = {
        topic: {"produced": len(msgs), "valid": len(msgs) - n_bad, "bad": n_bad}
        for topic, (msgs, n_bad) in plan.items()
    }
    return {
        "topics": topics,
        "produced": total,
        "fraud_transactions": sim.fraud_transactions,
        "seed": seed,
        "start": start.isoformat(),
        "days": days,
        "drift": None if sim.drift is None else {
            "kind": sim.drift, "start": sim.drift_start.isoformat() if sim.drift_start else None,
            "transactions": sim.drifted_transactions},
        "seconds": round(elapsed, 3),
        "events_per_s": round(total / elapsed, 1) if elapsed else None,
    }
