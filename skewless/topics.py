"""Create Kafka topics (idempotently) with the configured partitions: ingestion for its
topics, serving for the predictions topic."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from skewless.errors import ServiceError
from skewless.settings import Settings


BOOTSTRAP_TIMEOUT_MS = 10_000  # how long to wait for a broker to answer at all (one starting up does in seconds)


def ensure_topics(settings: Settings, topics: list[str]) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    try:
        admin = KafkaAdminClient(**settings.kafka.client_config(), request_timeout_ms=15000,
                                 bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS, reconnect_backoff_max_ms=1000)
    except KafkaError as exc:
        raise ServiceError(
            f"no Kafka broker answers at {','.join(settings.kafka.bootstrap_servers)}",
            "start one with: skewless services up",
        ) from exc
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            new = [NewTopic(t, settings.kafka.partitions, settings.kafka.replication_factor) for t in missing]
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
        return missing
    except KafkaError as exc:
        raise ServiceError(f"could not create Kafka topics {topics}: {exc}") from exc
    finally:
        admin.close()
