"""Landing lag under a steady trickle: how long an event waits before it is in the lake.

``skewless bench landing [--rates 10,100,1000] [--duration 120]``. Per rate, fresh topics
and two ``skewless ingest consume`` processes reading the same traffic side by side, each
with its own consumer group and lake:

* **bounded** — the project's settings: a batch lands once its first record has waited
  ``ingest.max_batch_age_s`` (default 60 s), besides the record, byte, event-time and
  1 s-idle rules;
* **baseline** — the same with no age bound (``max_batch_age_s`` = 1e9): before the bound,
  a trickle that is never quiet for a second lands only when a batch fills up
  (``flush_records`` per partition) or when the traffic stops.

Transactions are sent at the rate (the project's producer, acks=all, paced by the clock)
for ``duration`` seconds; each message's send time is kept by (partition, offset). A
watcher reads both lakes' manifests every 0.1 s; an offset has landed when the manifest
covering it appears (the batch's files are renamed right after, before its offsets are
committed). Lag = seen − sent. After the trickle the traffic stops, so the baseline's open
batches land by the idle rule (~1 s later): its lag is then bounded by the trickle's length,
which is what it would be for a trickle that never stops (until a batch fills). Figures:
lag p50 / p99 / max per consumer, landed batches (manifests) and their mean size.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

from benchmarks.bench_freshness import CHECKOUT, _child_env, _Child, _drop_topics, _pct, _write_config, parse_rates
from skewless.errors import ConfigError
from skewless.settings import Settings

DEFAULT_RATES = (10.0, 100.0, 1000.0)
DEFAULT_DURATION = 120.0
NO_BOUND_S = 1e9

__all__ = ["run", "table", "parse_rates", "check_args"]


def check_args(rates: Iterable[float] | None = None, duration: float | None = None, **_: Any) -> None:
    for r in rates or DEFAULT_RATES:
        if not 0 < r <= 20_000:
            raise ConfigError(f"rate {r:g} events/s is out of range", "give rates in (0, 20000]")
    if duration is not None and duration < 5:
        raise ConfigError(f"duration {duration:g} s is too short for a steady trickle", "give --duration 5 or more")


def _settings(base: Settings, root: Path, suffix: str, name: str, age_s: float) -> Settings:
    return base.model_copy(update={
        "lake_path": str(root / name / "lake"),
        "state_dir": str(root / name / "state"),
        "topics": base.topics.model_copy(update={
            "transactions": f"bench-landing-{suffix}-tx", "labels": f"bench-landing-{suffix}-labels",
            "predictions": f"bench-landing-{suffix}-pred"}),
        "kafka": base.kafka.model_copy(update={"consumer_group": f"bench-landing-{suffix}-{name}"}),
        "ingest": base.ingest.model_copy(update={"max_batch_age_s": age_s}),
    })


class _Watcher(threading.Thread):
    """Reads a lake's manifests every ``every`` s; the first sighting of each is its landing."""

    def __init__(self, settings: Settings, topic: str, every: float = 0.1):
        super().__init__(daemon=True)
        from skewless.lake_layout import LakeLayout

        self.layout, self.topic = LakeLayout.of(settings), topic
        self.every = every
        self.seen: dict[Path, tuple[float, int, int, int]] = {}  # manifest -> (time, partition, first, last)
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.scan()
            self.halt.wait(self.every)

    def scan(self) -> None:
        now = time.time()
        root = self.layout.manifests_root / self.topic
        partitions = [int(d.name) for d in root.iterdir() if d.name.isdigit()] if root.is_dir() else []
        for part in partitions:
            for first, last, p in self.layout.manifests(self.topic, part):
                if p not in self.seen:
                    self.seen[p] = (now, part, first, last)

    def landed(self) -> int:
        return sum(last - first + 1 for _, _, first, last in self.seen.values())

    def lags(self, sent: dict[tuple[int, int], float]) -> list[float]:
        out = []
        for t, part, first, last in self.seen.values():
            for off in range(first, last + 1):
                s = sent.get((part, off))
                if s is not None:
                    out.append(t - s)
        return out


def _trickle(settings: Settings, rate: float, duration: float) -> tuple[dict[tuple[int, int], float], int]:
    """Send transactions at ``rate`` for ``duration`` s; (send time by (partition, offset), sent)."""
    import orjson

    from ingestion.producer import make_producer
    from ingestion.simulator import simulate

    n = max(1, int(rate * duration))
    from datetime import datetime, timezone

    sim = simulate(n, seed=7, start=datetime.now(timezone.utc).replace(microsecond=0), days=1)
    messages = [(t["transaction_id"].encode(), orjson.dumps(t)) for t in sim.transactions[:n]]
    sent: dict[tuple[int, int], float] = {}
    failures: list[BaseException] = []
    producer = make_producer(settings)
    topic = settings.topics.transactions

    def keep(t_send: float) -> Callable[[Any], None]:
        def on_ok(md) -> None:
            sent[(md.partition, md.offset)] = t_send
        return on_ok

    t0 = time.perf_counter()
    try:
        for i, (key, value) in enumerate(messages):
            ahead = i / rate - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)
            producer.send(topic, key=key, value=value).add_callback(keep(time.time())).add_errback(failures.append)
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=30)
    if failures:
        raise RuntimeError(f"{len(failures)} messages were not delivered: {failures[0]}")
    return sent, len(messages)


def _wait_joined(settings: Settings, groups: list[str], timeout: float = 120.0) -> bool:
    """True once every group is Stable with a member (its consumer got its partitions)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(**settings.kafka.client_config(), request_timeout_ms=10000)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                desc = admin.describe_groups(groups)
                if all(desc[g]["group_state"] == "Stable" and desc[g]["members"] for g in groups):
                    return True
            except Exception:  # noqa: BLE001 - the coordinator is still loading
                pass
            time.sleep(0.5)
        return False
    finally:
        admin.close()


def _figures(lags: list[float]) -> dict[str, Any]:
    r = lambda x: None if x is None else round(x, 3)  # noqa: E731
    return {"lag_p50_s": r(_pct(lags, 50)), "lag_p99_s": r(_pct(lags, 99)),
            "lag_max_s": r(max(lags) if lags else None)}


def _one_rate(settings: Settings, root: Path, rate: float, duration: float,
              progress: Callable[[str], None]) -> dict[str, Any]:
    from skewless.topics import ensure_topics

    suffix = uuid.uuid4().hex[:8]
    age = settings.ingest.max_batch_age_s
    configs = {"bounded": _settings(settings, root, suffix, "bounded", age),
               "baseline": _settings(settings, root, suffix, "baseline", NO_BOUND_S)}
    topics = [configs["bounded"].topics.transactions, configs["bounded"].topics.labels,
              configs["bounded"].topics.predictions]
    groups = [s.kafka.consumer_group for s in configs.values()]
    ensure_topics(configs["bounded"], topics)
    env = _child_env(CHECKOUT)
    children: dict[str, _Child] = {}
    watchers: dict[str, _Watcher] = {}
    try:
        for name, s in configs.items():
            cfg = _write_config(s, root / name / "skewless.yaml")
            children[name] = _Child(f"consume-{name}", [sys.executable, "-m", "cli", "ingest", "consume",
                                                        "--config", str(cfg), "--json"],
                                    env, CHECKOUT, root / name / "logs")
            watchers[name] = _Watcher(s, s.topics.transactions)
            watchers[name].start()
        progress(f"{rate:g}/s: waiting for both consumers to join")
        if not _wait_joined(settings, groups):
            raise RuntimeError("the consumers did not join their groups within 120 s: "
                               + " | ".join(c.tail(500) for c in children.values()))
        progress(f"{rate:g}/s: trickle for {duration:g} s")
        t_start = time.time()
        sent, n = _trickle(configs["bounded"], rate, duration)
        t_end = time.time()
        progress(f"{rate:g}/s: waiting for both lakes to land all {n:,} events")
        deadline = time.monotonic() + min(age, 300) + 60
        while time.monotonic() < deadline and any(w.landed() < n for w in watchers.values()):
            if not all(c.alive() for c in children.values()):
                break
            time.sleep(0.2)
        out: dict[str, Any] = {"rate": rate, "sent": n, "seconds": round(t_end - t_start, 1),
                               "sent_per_s": round(n / (t_end - t_start), 1)}
        for name, w in watchers.items():
            w.scan()
            lags = w.lags(sent)
            sizes = [last - first + 1 for _, _, first, last in w.seen.values()]
            out[name] = {"landed": w.landed(), "batches": len(w.seen),
                         "mean_batch_events": round(statistics.mean(sizes), 1) if sizes else None,
                         **_figures(lags)}
        return out
    finally:
        for w in watchers.values():
            w.halt.set()
        for c in children.values():
            c.stop(timeout=60)
        _drop_topics(settings, topics, groups)


def run(settings: Settings, size: int | None = None, repeats: int = 1, rates: Iterable[float] = DEFAULT_RATES,
        duration: float = DEFAULT_DURATION, progress: Callable[[str], None] | None = None,
        **_: Any) -> dict[str, Any]:
    """Landing lag at each steady rate, the age bound against none, side by side."""
    import os

    check_args(rates=rates, duration=duration)
    progress = progress or (lambda _msg: None)
    runs = []
    with tempfile.TemporaryDirectory(prefix="skewless-bench-landing-") as tmp:
        for rate in rates:
            runs.append(_one_rate(settings, Path(tmp), float(rate), float(duration), progress))
    return {"max_batch_age_s": settings.ingest.max_batch_age_s,
            "flush_records": settings.ingest.flush_records, "partitions": settings.kafka.partitions,
            "duration_s": duration, "load_1m": round(os.getloadavg()[0], 2), "runs": runs}


def table(result: dict[str, Any]):
    from rich.table import Table

    t = Table("rate (sent/s)", "consumer", "landed", "batches", "events/batch", "lag p50 (s)", "lag p99 (s)",
              "lag max (s)", title=f"landing lag (max_batch_age_s {result['max_batch_age_s']:g}, "
              f"flush_records {result['flush_records']:,}, {result['partitions']} partitions, "
              f"load {result['load_1m']})")
    for r in result["runs"]:
        for name in ("bounded", "baseline"):
            f = r[name]
            t.add_row(f"{r['rate']:g} ({r['sent_per_s']:g})", name, f"{f['landed']:,} / {r['sent']:,}",
                      str(f["batches"]), str(f["mean_batch_events"]), str(f["lag_p50_s"]), str(f["lag_p99_s"]),
                      str(f["lag_max_s"]))
    return t


if __name__ == "__main__":  # python -m benchmarks.bench_landing
    from skewless.settings import load_settings

    print(json.dumps(run(load_settings())))
