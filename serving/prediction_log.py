"""Every prediction, sent to the ``predictions`` topic without ever slowing one down.

``submit`` only puts the record on a bounded in-memory queue (never blocks, never
raises). A daemon thread owns the Kafka producer: it connects (retrying while the
broker is away), creates the topic if needed, and sends. When the queue is full, new
records are counted in ``dropped`` (and in ``/metrics``) instead of waiting: a slow or
absent Kafka costs prediction records, never prediction latency.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import orjson

from serving import metrics
from skewless.settings import Settings

log = logging.getLogger(__name__)


class PredictionLog:
    def __init__(self, settings: Settings, retry_s: float = 2.0):
        self.settings = settings
        self.topic = settings.topics.predictions
        self.queue: queue.Queue = queue.Queue(maxsize=settings.serving.log_queue_size)
        self.retry_s = retry_s
        self.sent = 0
        self.dropped = 0
        self.connected = False
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def submit(self, record: dict[str, Any]) -> bool:
        try:
            self.queue.put_nowait(record)
            return True
        except queue.Full:
            self.dropped += 1
            metrics.LOG_DROPPED.inc()
            return False

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (if Kafka is there), then stop the sender."""
        self._closing.set()
        self._thread.join(timeout)

    # -- the sender thread ------------------------------------------------------------
    def _producer(self):
        from kafka import KafkaProducer

        from skewless.topics import ensure_topics

        ensure_topics(self.settings, [self.topic])
        return KafkaProducer(**self.settings.kafka.client_config(), acks=1, linger_ms=20,
                             max_block_ms=2000, request_timeout_ms=5000, compression_type=None)

    def _connect(self):
        """Until it works or the log closes: Kafka away costs records, never answers."""
        while not self._closing.is_set():
            try:
                producer = self._producer()
                self.connected = True
                return producer
            except Exception as exc:  # noqa: BLE001
                log.warning("prediction log: Kafka unavailable (%s); retrying in %.0fs", exc, self.retry_s)
                self._closing.wait(self.retry_s)
        return None

    def _run(self) -> None:
        # Connect at start-up, not on the first prediction: the client's set-up costs CPU
        # that would otherwise land on the first requests.
        producer = self._connect()
        while producer is not None:
            try:
                record = self.queue.get(timeout=0.2)
            except queue.Empty:
                if self._closing.is_set():
                    break
                continue
            try:
                producer.send(self.topic, key=record["request_id"].encode(), value=orjson.dumps(record))
                self.sent += 1
                metrics.LOG_SENT.inc()
            except Exception as exc:  # noqa: BLE001
                self.dropped += 1
                metrics.LOG_DROPPED.inc()
                log.warning("prediction log: send failed: %s", exc)
        if producer is None:  # closed before Kafka was ever reachable
            unsent = self.queue.qsize()
            self.dropped += unsent
            metrics.LOG_DROPPED.inc(unsent)
            return
        producer.flush(timeout=5)
        producer.close(timeout=5)
