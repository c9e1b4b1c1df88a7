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
_STOP = object()


class PredictionLog:
    def __init__(self, settings: Settings, retry_s: float = 2.0):
        self.settings = settings
        self.topic = settings.topics.predictions
        self.queue: queue.Queue = queue.Queue(maxsize=settings.serving.log_queue_size)
        self.retry_s = retry_s
        self.sent = 0
        self.dropped = 0
        self.connected = False
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
        try:
            self.queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)

    # -- the sender thread ------------------------------------------------------------
    def _producer(self):
        from kafka import KafkaProducer

        from skewless.topics import ensure_topics

        ensure_topics(self.settings, [self.topic])
        return KafkaProducer(**self.settings.kafka.client_config(), acks=1, linger_ms=20,
                             max_block_ms=2000, request_timeout_ms=5000, compression_type=None)

    def _run(self) -> None:
        producer = None
        while True:
            record = self.queue.get()
            if record is _STOP:
                break
            while producer is None:
                try:
                    producer = self._producer()
                    self.connected = True
                except Exception as exc:  # noqa: BLE001 - Kafka away: keep answering, retry later
                    log.warning("prediction log: Kafka unavailable (%s); retrying in %.0fs", exc, self.retry_s)
                    time.sleep(self.retry_s)
            try:
                producer.send(self.topic, key=record["request_id"].encode(), value=orjson.dumps(record))
                self.sent += 1
                metrics.LOG_SENT.inc()
            except Exception as exc:  # noqa: BLE001
                self.dropped += 1
                metrics.LOG_DROPPED.inc()
                log.warning("prediction log: send failed: %s", exc)
        if producer is not None:
            producer.flush(timeout=5)
            producer.close(timeout=5)
