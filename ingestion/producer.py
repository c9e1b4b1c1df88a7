"""Send simulated events (and, on request, malformed ones) to Kafka."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Callable, Iterator

import numpy as np
import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError

from skewless.contracts import LABELS, TRANSACTIONS
from ingestion.simulator import bad_messages, default_start, drift_start_at, simulate_encoded
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


def _interleaved(chunks: Callable[[], Iterator[list[tuple[bytes, bytes]]]], n_good: int, bad: list[bytes],
                 rng: np.random.Generator) -> Iterator[list[tuple[bytes | None, bytes]]]:
    """``_interleave`` chunk by chunk: the same messages in the same order (the bad ones'
    places drawn now, as ``_interleave`` draws them), made only when iterated."""
    if not bad:
        return chunks()
    slots = set(rng.choice(n_good + len(bad), size=len(bad), replace=False).tolist())

    def merged() -> Iterator[list[tuple[bytes | None, bytes]]]:
        pos = bi = 0
        for good in chunks():
            out: list[tuple[bytes | None, bytes]] = []
            for message in good:
                while pos in slots:
                    out.append((None, bad[bi]))
                    bi += 1
                    pos += 1
                out.append(message)
                pos += 1
            yield out
        yield [(None, b) for b in bad[bi:]]  # the places after the last good message

    return merged()


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
    sim = simulate_encoded(events, seed, start, days, schema_version=schema_version, drift=drift,
                           drift_start=drift_start)
    rng = np.random.default_rng(seed + 1)
    # Per topic: its messages as chunks, made as they are sent (millions of events are never
    # all in memory as dicts or bytes), with the bad ones at the places _interleave picks.
    plan: dict[str, tuple[Iterator[list[tuple[bytes | None, bytes]]], int, int]] = {}
    for contract, n_good, chunks in ((TRANSACTIONS, sim.transactions, lambda: sim.transaction_chunks()),
                                     (LABELS, sim.labels, lambda: iter([sim.label_messages()]))):
        topic = getattr(settings.topics, contract.name)
        n_bad = int(round(n_good * bad_fraction / (1 - bad_fraction))) if n_good else 0
        bad = [b for _, b in bad_messages(n_bad, seed, contract.name)]
        plan[topic] = (_interleaved(chunks, n_good, bad, rng), n_good + n_bad, n_bad)
    ensure_topics(settings, list(plan))

    producer = make_producer(settings)
    total = sum(n for _, n, _ in plan.values())
    sent = 0
    failures: list[BaseException] = []
    t0 = time.perf_counter()
    try:
        for topic, (chunks, _, _) in plan.items():
            for messages in chunks:
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
    topics = {topic: {"produced": n, "valid": n - n_bad, "bad": n_bad} for topic, (_, n, n_bad) in plan.items()}
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
