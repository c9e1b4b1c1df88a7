"""The prediction log against a PRIVATE Kafka broker (its own ports and data dir, started
and stopped here; the shared broker is never touched): a 3-minute kill -9 outage under
load loses no prediction and writes none twice, and the metrics match the topic; spills
left by a previous process are replayed, records that may already be in the topic are
not written again."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving import metrics
from serving.prediction_log import PredictionLog, spill_root
from serving.spill import Spill, encode
from skewless.services import kafka
from skewless.services.process import pid_alive, read_pid
from skewless.services.server_process import free_port
from skewless.settings import Settings, load_settings
from tests.isolation import isolated_settings, with_overrides

REPO = Path(__file__).resolve().parents[2]
OUTAGE_S = 180  # the 3-minute broker outage
WARMUP_S = 10  # load before the broker is killed
AFTER_S = 20  # load after it is back, while the spill replays
RATE = 400  # predictions per second, submitted throughout

pytestmark = pytest.mark.wallclock  # the outage is three minutes of waiting


class PrivateBroker:
    def __init__(self, settings: Settings):
        self.settings = settings

    def start(self) -> None:
        kafka.up(self.settings)

    def kill(self) -> None:
        """kill -9, as a crash: no clean shutdown, the data dir stays for the restart."""
        pid = read_pid(kafka._dir(self.settings) / "kafka.pid")  # noqa: SLF001
        assert pid is not None, "the private broker is not running"
        os.kill(pid, signal.SIGKILL)
        while pid_alive(pid):
            time.sleep(0.1)

    def stop(self) -> None:
        kafka.down(self.settings)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    base = load_settings(REPO / "skewless.yaml")
    port, controller = free_port(), free_port()
    settings = isolated_settings(
        base, tmp_path_factory.mktemp("private-kafka"),
        kafka={"bootstrap_servers": [f"localhost:{port}"], "partitions": 4},
        services={"kafka_port": port, "kafka_controller_port": controller, "kafka_heap": "384m"})
    b = PrivateBroker(settings)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def log_settings(broker, tmp_path) -> Settings:
    """This test's own topic and state dir (so its own spill), on the private broker."""
    tag = uuid.uuid4().hex[:8]
    return with_overrides(broker.settings, state_dir=str(tmp_path / "state"),
                          topics={"predictions": f"pr-{tag}"}, serving={"log_predictions": True})


def _record(request_id: str) -> dict:
    return {"request_id": request_id, "transaction_id": f"tx-{request_id}", "user_id": "u1", "merchant_id": "m1",
            "amount": 12.5, "event_time": "2026-03-01T00:00:00+00:00",
            "predicted_at": datetime.now(timezone.utc).isoformat(), "model_name": "skewless-fraud",
            "model_version": "3", "feature_service": "fraud_model_v1", "score": 0.1, "review": False,
            "features": {f"feature_{j}": float(j) for j in range(20)}}


def _topic_keys(settings: Settings) -> Counter:
    """Every record key in the topic, read to its end."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**settings.kafka.client_config(), group_id=None, enable_auto_commit=False)
    try:
        topic = settings.topics.predictions
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        keys: Counter = Counter()
        while any(consumer.position(tp) < end[tp] for tp in tps):
            for messages in consumer.poll(timeout_ms=1000).values():
                for m in messages:
                    keys[m.key.decode()] += 1
        return keys
    finally:
        consumer.close()


def _log_metrics() -> dict[str, float]:
    data, _ = metrics.render()
    return {s.name: s.value for family in text_string_to_metric_families(data.decode())
            for s in family.samples if s.name.startswith("skewless_prediction_log_")}


def _delta(after: dict[str, float], before: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


class Load:
    """Submits RATE predictions a second to whichever log is current, on its own thread."""

    def __init__(self, log: PredictionLog):
        self.log = log
        self.ids: list[str] = []
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        run = uuid.uuid4().hex[:6]
        t0 = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - t0) * RATE)
            while len(self.ids) < due:
                rid = f"{run}-{len(self.ids)}"
                if not self.log.submit(_record(rid)):
                    self.refused += 1
                self.ids.append(rid)
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.timeout(OUTAGE_S + 600)
def test_a_broker_outage_under_load_loses_nothing_and_duplicates_nothing(broker, log_settings):
    before = _log_metrics()
    first = PredictionLog(log_settings)
    load = Load(first)
    time.sleep(WARMUP_S)
    while first.sent == first.replayed:  # delivering straight to Kafka before the outage (what came
        time.sleep(0.1)                   # before the first connection went via the spill)

    broker.kill()
    time.sleep(OUTAGE_S / 2)
    # The server restarts in the middle of the outage: what it had not delivered stays in
    # its spill, and the next process adopts it.
    second = PredictionLog(log_settings)
    load.log = second
    first.close(timeout=5)
    assert first.spilled_records > 0 and first.dropped == 0 and first.failed > 0
    time.sleep(OUTAGE_S / 2)
    assert second.spilled_records > 0 and not second.connected

    spilled = first.spilled_records + second.spilled_records
    broker.start()
    back, drained = time.monotonic(), None
    while time.monotonic() - back < AFTER_S:
        time.sleep(0.5)
        if drained is None and second.connected and not second.spilled_records:
            drained = time.monotonic() - back
    load.stop()
    second.close(timeout=300)  # returns once every record is acknowledged (or found) in the topic
    drained = drained or time.monotonic() - back
    after = _log_metrics()

    keys = _topic_keys(log_settings)
    submitted = set(load.ids)
    in_topic = sum(keys.values())
    print(f"\n{OUTAGE_S}s outage at {RATE}/s: {len(load.ids)} submitted, {in_topic} in the topic; {spilled} "
          f"spilled when the broker came back, drained {drained:.1f}s after; replayed "
          f"{first.replayed + second.replayed}, found already in the topic "
          f"{first.found_in_topic + second.found_in_topic}, "
          f"failed deliveries {first.failed + second.failed}")
    assert load.refused == 0
    assert len(submitted) == len(load.ids) > RATE * (WARMUP_S + OUTAGE_S)
    assert set(keys) == submitted, f"lost: {len(submitted - set(keys))}, unknown: {len(set(keys) - submitted)}"
    duplicated = {k: n for k, n in keys.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} request_ids written more than once"

    # The metrics tell what happened: sent is exactly what is in the topic.
    assert first.sent + second.sent == in_topic
    assert first.dropped + second.dropped == 0
    assert second.replayed > 0 and second.spilled_records == 0
    assert _delta(after, before, "skewless_prediction_log_sent_total") == in_topic
    assert _delta(after, before, "skewless_prediction_log_dropped_total") == 0
    assert _delta(after, before, "skewless_prediction_log_replayed_total") == first.replayed + second.replayed
    assert _delta(after, before, "skewless_prediction_log_found_in_topic_total") == (
        first.found_in_topic + second.found_in_topic)
    assert _delta(after, before, "skewless_prediction_log_failed_deliveries_total") == first.failed + second.failed
    assert _delta(after, before, "skewless_prediction_log_spill_records") == 0
    assert not [p for p in spill_root(log_settings).iterdir()]  # every spill replayed and removed


@pytest.mark.timeout(300)
def test_spilled_records_already_in_the_topic_are_not_written_again(broker, log_settings):
    """A delivery that timed out may have been written (the broker wrote it, its answer
    was lost), and a process may die halfway through replaying a segment. Both leave
    records in a spill that are already in the topic: the next process finds them there
    and sends only the others."""
    from kafka import KafkaProducer

    from skewless.topics import ensure_topics

    ensure_topics(log_settings, [log_settings.topics.predictions])
    rid = uuid.uuid4().hex[:6]
    ts = int(time.time() * 1000) - 60_000
    records = [(f"{rid}-{i}", orjson.dumps(_record(f"{rid}-{i}"))) for i in range(60)]
    # Already in the topic, exactly as the log sends them: 5 of the timed-out deliveries
    # (20..29), and 7 of the segment whose replay was cut short (40..46).
    written = [*range(20, 25), *range(40, 47)]
    producer = KafkaProducer(**log_settings.kafka.client_config())
    for i in written:
        key, value = records[i]
        producer.send(log_settings.topics.predictions, key=key.encode(), value=value, timestamp_ms=ts + i)
    producer.flush()
    producer.close()

    dead = Spill.create(spill_root(log_settings), max_bytes=10**8)
    dead.append([encode(ts + i, 20 <= i < 30, key, value) for i, (key, value) in enumerate(records[:40])])
    dead.seal()
    dead.append([encode(ts + i, False, key, value) for i, (key, value) in enumerate(records[40:], start=40)])
    dead.mark(dead.segments[1])  # it had started replaying this one when it died
    dead.close()

    log = PredictionLog(log_settings)
    log.close(timeout=120)
    keys = _topic_keys(log_settings)
    assert set(keys) == {key for key, _ in records}
    assert max(keys.values()) == 1
    assert log.found_in_topic == len(written)
    assert log.sent == len(records) == sum(keys.values())
    assert log.replayed == len(records) - len(written) and log.dropped == 0
    assert not [p for p in spill_root(log_settings).iterdir()]
