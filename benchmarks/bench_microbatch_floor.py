"""Spark's floor under the streaming job: how soon a record sent to Kafka is in our Python code,
with a micro-batch query (``foreachBatch``, as ``etl/stream.py``) and with Spark's real-time mode
(``trigger(realTime=...)`` + a Python ``ForeachWriter``), with no feature work at all.

    python -m benchmarks.bench_microbatch_floor --rates 10,100,1000 --duration 30 [--mode microbatch|realtime] --json
    python -m benchmarks.bench_microbatch_floor --variants ours,noop,tuned --rates 100     # settings that might move it
    skewless bench microbatch_floor [--rates ...] [--duration S] [--repeats R]             # the same, micro-batch

Per variant, one child process holds a Spark session built by ``skewless.spark.spark_session``
(our session settings; its start-up lines go to ``<state_dir>/logs/spark.log``), then per rate
and repeat:

1. a fresh topic (``--partitions``, default 2) on the shared broker; the child starts the query
   on it (``startingOffsets`` earliest and the reader options of ``etl/stream.py``) with a fresh
   checkpoint under a temporary directory; one record is sent and the child says when the query
   has processed it (the first batch's planning and JIT warm-up are not measured);
2. this process sends records at the rate (kafka-python, ``acks=all``, round robin over the
   partitions), each carrying its send time (``time.time()`` just before ``send``) in its
   value; the offset of each comes from its acknowledgment. ``--warmup`` seconds first, not
   counted, then ``--duration`` seconds measured;
3. the child is told the end offsets, waits until the query has passed them (at most
   ``--drain`` seconds), stops the query and returns when each record became visible:

   * micro-batch: each batch's time inside ``foreachBatch`` — sink ``collect``: after
     ``df.toPandas()`` of ``topic, partition, offset, key, value, timestamp`` (Arrow, like
     ``etl/stream.py``); sink ``noop``: on entry, the DataFrame untouched — and the batch's
     offset range (the checkpoint's ``offsets/<batch>`` files); latency of a record = its
     batch's time - its send time. Also every batch's ``durationMs`` from the query progress
     (latestOffset, queryPlanning, getBatch, addBatch, walCommit, commitOffsets,
     triggerExecution) and the gap between batches.
   * real-time: the time ``ForeachWriter.process`` saw the record (the Python worker writes
     ``partition offset time`` lines, one file per (partition, epoch), read afterwards), and
     each ``open``/``close``; latency = that time - the send time carried in the value.

Figures per run: records sent and the rate reached, latency p50/p90/p99/max over the measured
records (a record never seen counts as missing, not in the percentiles), batches with data,
records per batch, duration medians, the child's CPU share (its process tree, the JVM
included, over all cores) and the 1-min load average at start and end. Medians over
``--repeats`` are in ``summary``. The machine is shared: quote the load with every figure.

Topics are deleted at the end; checkpoints and the real-time mode's per-record files live in a
temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from skewless.errors import ConfigError, ServiceError
from skewless.settings import Settings

DEFAULT_RATES = (10.0, 100.0, 1000.0)
DEFAULT_DURATION = 30.0
MAX_RATE = 20_000.0
MARK = "@@floor "  # the child's protocol lines on stdout start with this (anything else is ignored)
DURATION_KEYS = ("latestOffset", "queryPlanning", "getBatch", "addBatch", "walCommit", "commitOffsets",
                 "triggerExecution")

# What each variant changes against "ours" (etl/stream.py's query on skewless.spark's session).
# sql: runtime SQL confs; read/write: reader/writer options; master; sink; ckpt_tmpfs: the
# checkpoint on /dev/shm; trigger: micro-batch processingTime or real-time batch duration.
VARIANTS: dict[str, dict[str, Any]] = {
    "ours": {},
    "noop": {"sink": "noop"},
    "shuffle1": {"sql": {"spark.sql.shuffle.partitions": "1"}},
    "aqe_off": {"sql": {"spark.sql.adaptive.enabled": "false"}},
    "arrow_off": {"sql": {"spark.sql.execution.arrow.pyspark.enabled": "false"}},
    "nodata_off": {"sql": {"spark.sql.streaming.noDataMicroBatches.enabled": "false"}},
    "polling0": {"sql": {"spark.sql.streaming.pollingDelay": "0"}},
    "poll_timeout": {"read": {"kafkaConsumer.pollTimeoutMs": "100", "fetchOffset.retryIntervalMs": "1"}},
    "min_offsets": {"read": {"minOffsetsPerTrigger": "1", "maxTriggerDelay": "0s"}},
    "async_progress": {"write": {"asyncProgressTrackingEnabled": "true",
                                 "asyncProgressTrackingCheckpointIntervalMs": "1000"}},
    "ckpt_tmpfs": {"ckpt_tmpfs": True},
    "local1": {"master": "local[1]"},
    "tuned": {"sql": {"spark.sql.shuffle.partitions": "1", "spark.sql.adaptive.enabled": "false",
                      "spark.sql.streaming.noDataMicroBatches.enabled": "false"},
              "ckpt_tmpfs": True},
    # real-time mode (Spark 4.1+): a Python ForeachWriter sink; the batch duration is the epoch
    "rtm_1s": {"mode": "realtime", "trigger": "1 second",
               "sql": {"spark.sql.streaming.realTimeMode.minBatchDuration": "1000"}},
    "rtm_5s": {"mode": "realtime", "trigger": "5 seconds"},
}
MODE_VARIANTS = {"microbatch": ("ours", "noop"), "realtime": ("rtm_1s", "rtm_5s")}


# -- arguments ------------------------------------------------------------------------------
def parse_rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise ConfigError(f"--rates takes events/s separated by commas (e.g. 10,100,1000), got {text!r}") from None
    if not rates or any(not (math.isfinite(r) and 0 < r <= MAX_RATE) for r in rates):
        raise ConfigError(f"--rates takes events/s in (0, {MAX_RATE:,.0f}] separated by commas, got {text!r}")
    return rates


def check_args(rates: Iterable[float] | None = None, duration: float | None = None,
               variants: Iterable[str] | None = None, **_: Any) -> None:
    if duration is not None and not (math.isfinite(duration) and duration >= 5):
        raise ConfigError(f"--duration must be at least 5 s, got {duration:g}")
    unknown = [v for v in (variants or ()) if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant(s) {', '.join(unknown)}", f"choose from: {', '.join(VARIANTS)}")
    if rates is not None:
        parse_rates(",".join(str(r) for r in rates))


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


# -- the child: a Spark session, one query per run --------------------------------------------
def _say(**msg: Any) -> None:
    sys.__stdout__.write(MARK + json.dumps(msg) + "\n")
    sys.__stdout__.flush()


def _checkpoint_batches(checkpoint: Path) -> dict[int, dict[tuple[int, int], int]]:
    """batch id -> {(topic partition index, ...)} end offsets, from ``offsets/<id>`` files."""
    out: dict[int, dict[tuple[int, int], int]] = {}
    for f in (checkpoint / "offsets").iterdir():
        if not f.name.isdigit():
            continue
        last = f.read_text().strip().splitlines()[-1]
        ends = {}
        for _topic, parts in json.loads(last).items():
            ends.update({int(p): int(o) for p, o in parts.items()})
        out[int(f.name)] = ends
    return out


def _progress(p: Any) -> dict[str, Any] | None:
    """A query progress as a dict (pyspark 4 gives an object with ``.json``)."""
    if p is None:
        return None
    return json.loads(p.json) if hasattr(p, "json") else dict(p)


def _offsets(raw: Any) -> dict[int, int]:
    """A Kafka source offset (``{"topic": {"0": 12}}``, maybe as JSON text) as partition -> offset."""
    if isinstance(raw, str):
        raw = json.loads(raw)
    out: dict[int, int] = {}
    for parts in (raw or {}).values():
        out.update({int(p): int(o) for p, o in parts.items()})
    return out


class _RealTimeWriter:
    """The Python ForeachWriter of the real-time runs: one file per (partition, epoch) with
    ``open``/``row``/``close`` lines and their times."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def open(self, partition_id, epoch_id):  # noqa: A003 - Spark's name
        self.f = open(os.path.join(self.out_dir, f"{partition_id}_{epoch_id}.log"), "a", buffering=1 << 16)
        self.f.write(f"open {partition_id} {epoch_id} {time.time():.6f}\n")
        return True

    def process(self, row):
        self.f.write(f"row {row.partition} {row.offset} {time.time():.6f}\n")

    def close(self, error):
        self.f.write(f"close {time.time():.6f} {'error' if error else 'ok'}\n")
        self.f.close()


def _read_rtm(out_dir: Path) -> tuple[list[tuple[int, int, float]], list[dict[str, Any]]]:
    rows, epochs = [], []
    for f in out_dir.glob("*.log"):
        ep: dict[str, Any] = {"rows": 0}
        for line in f.read_text().splitlines():
            parts = line.split()
            if parts[0] == "row":
                rows.append((int(parts[1]), int(parts[2]), float(parts[3])))
                ep["rows"] += 1
            elif parts[0] == "open":
                ep.update(partition=int(parts[1]), epoch=int(parts[2]), open=float(parts[3]))
            elif parts[0] == "close":
                ep["close"] = float(parts[1])
        epochs.append(ep)
    return rows, epochs


def child_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    from skewless.settings import load_settings
    from skewless.spark import spark_session

    settings = load_settings(Path(spec["config"]))
    v = spec["variant"]
    spark = spark_session(settings, v.get("master", "local[2]"), app=f"floor-{spec['name']}", kafka=True)
    spark.conf.set("spark.sql.streaming.numRecentProgressUpdates", "100000")
    for k, val in v.get("sql", {}).items():
        spark.conf.set(k, val)
    _say(event="ready", spark=spark.version, master=spark.sparkContext.master)
    root = Path(spec["work"])
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "exit":
            break
        topic, run_dir = cmd["topic"], root / cmd["topic"]
        ckpt_root = Path(tempfile.mkdtemp(dir="/dev/shm")) if v.get("ckpt_tmpfs") else run_dir
        checkpoint = ckpt_root / "checkpoint"
        out_dir = run_dir / "rows"
        out_dir.mkdir(parents=True, exist_ok=True)
        realtime = v.get("mode") == "realtime"
        options = {"kafka.bootstrap.servers": spec["bootstrap"], "subscribe": topic,
                   "startingOffsets": "earliest", "kafka.isolation.level": "read_committed",
                   "failOnDataLoss": "false", **v.get("read", {})}
        if not realtime:  # real-time mode refuses it: "maxOffsetsPerTrigger is not compatible with real time mode"
            options["maxOffsetsPerTrigger"] = str(spec["max_offsets"])
        reader = spark.readStream.format("kafka")
        for k, val in options.items():
            reader = reader.option(k, val)
        source = reader.load().select("topic", "partition", "offset", "key", "value", "timestamp")
        visible: list[tuple[int, float, float, int]] = []  # batch id, entered, visible, rows
        if realtime:
            writer = (source.select("partition", "offset").writeStream.foreach(_RealTimeWriter(str(out_dir)))
                      .outputMode("update").trigger(realTime=v.get("trigger", "5 seconds")))
        else:
            collect = v.get("sink", "collect") == "collect"

            def batch(df, batch_id: int) -> None:
                entered = time.time()
                n = len(df.toPandas()) if collect else -1
                visible.append((batch_id, entered, time.time(), n))

            writer = source.writeStream.foreachBatch(batch).trigger(processingTime=v.get("trigger", "0 seconds"))
        for k, val in v.get("write", {}).items():
            writer = writer.option(k, val)
        try:
            query = writer.option("checkpointLocation", str(checkpoint)).start()
        except Exception as exc:  # noqa: BLE001 - reported, one line
            _say(event="error", error=str(exc).strip().splitlines()[0][:600])
            continue
        _say(event="started")

        def done(ends: dict[str, int]) -> bool:
            if query.exception() is not None:
                return True
            if realtime:
                got = _checkpoint_batches(checkpoint) if (checkpoint / "offsets").exists() else {}
                last = got[max(got)] if got else {}
                seen = {}
                for p, o, _t in _read_rtm(out_dir)[0]:
                    seen[p] = max(seen.get(p, -1), o + 1)
                return all(max(last.get(int(p), 0), seen.get(int(p), 0)) >= e for p, e in ends.items())
            prog = _progress(query.lastProgress)
            if not prog or not visible:
                return False
            end = _offsets(prog["sources"][0].get("endOffset"))
            return all(end.get(int(p), 0) >= e for p, e in ends.items())

        warm = json.loads(sys.stdin.readline())  # {"cmd": "warm", "ends": {...}}: one record sent
        deadline = time.time() + 120
        while not done(warm["ends"]) and time.time() < deadline:
            time.sleep(0.5 if realtime else 0.05)
        _say(event="warm", ok=done(warm["ends"]), error=str(query.exception())[:600] if query.exception() else None)
        stop = json.loads(sys.stdin.readline())  # {"cmd": "stop", "ends": {...}, "drain": s}
        deadline = time.time() + stop["drain"]
        while not done(stop["ends"]) and time.time() < deadline:
            time.sleep(0.5 if realtime else 0.05)
        drained = done(stop["ends"])
        time.sleep(0.5)
        error = query.exception()
        progress = [_progress(p) for p in query.recentProgress]
        query.stop()
        batches = _checkpoint_batches(checkpoint) if (checkpoint / "offsets").exists() else {}
        result: dict[str, Any] = {"event": "result", "drained": drained,
                                  "error": str(error).strip().splitlines()[0][:600] if error else None,
                                  "progress": [{"batchId": p["batchId"], "numInputRows": p["numInputRows"],
                                                "durationMs": p.get("durationMs", {}), "timestamp": p["timestamp"],
                                                "start": _offsets(p["sources"][0].get("startOffset")),
                                                "end": _offsets(p["sources"][0].get("endOffset"))}
                                               for p in progress if p.get("sources")],
                                  "offsets": {str(b): {str(p): o for p, o in e.items()} for b, e in batches.items()}}
        if realtime:
            rows, epochs = _read_rtm(out_dir)
            result["rows"] = rows
            result["epochs"] = epochs
        else:
            result["visible"] = visible
        _say(**result)
        if v.get("ckpt_tmpfs"):
            shutil.rmtree(ckpt_root, ignore_errors=True)
    spark.stop()


# -- the parent: topics, producer, figures ----------------------------------------------------
class _Sender:
    """Sends at a steady rate, round robin over the partitions; send time and offset per record."""

    def __init__(self, producer, topic: str, partitions: int):
        self.producer, self.topic, self.partitions = producer, topic, partitions
        self.sent: dict[tuple[int, int], float] = {}  # (partition, offset) -> send time
        self.measured: set[tuple[int, int]] = set()
        self.lost = 0
        self.lock = threading.Lock()
        self.i = 0

    def send(self, measured: bool) -> None:
        t = time.time()
        part = self.i % self.partitions
        self.i += 1
        fut = self.producer.send(self.topic, value=b"%.6f|%d" % (t, self.i), partition=part)

        def ok(md, t=t, measured=measured):
            with self.lock:
                self.sent[(md.partition, md.offset)] = t
                if measured:
                    self.measured.add((md.partition, md.offset))

        def err(_exc):
            self.lost += 1

        fut.add_callback(ok)
        fut.add_errback(err)

    def steady(self, rate: float, seconds: float, measured: bool) -> float:
        t0 = time.perf_counter()
        n = int(rate * seconds)
        for k in range(n):
            wait = t0 + k / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            self.send(measured)
        return n / max(1e-9, time.perf_counter() - t0)

    def ends(self) -> dict[str, int]:
        self.producer.flush()
        out: dict[str, int] = {}
        with self.lock:
            for p, o in self.sent:
                out[str(p)] = max(out.get(str(p), 0), o + 1)
        return out


def _figures(res: dict[str, Any], sender: _Sender, realtime: bool) -> dict[str, Any]:
    """Per-record latency (visible - send) over the measured records, and the batch profile."""
    seen: dict[tuple[int, int], float] = {}
    if realtime:
        for p, o, t in res.get("rows", []):
            seen.setdefault((p, o), t)
    else:
        # a batch's offset range: its progress (start, end); else the checkpoint's offsets/<id>
        # files (async progress tracking writes them only every so often)
        ranges = {int(p["batchId"]): ({int(k): v for k, v in p["start"].items()}, {int(k): v for k, v in p["end"].items()})
                  for p in res.get("progress", []) if p.get("end")}
        offsets = {int(b): {int(p): o for p, o in e.items()} for b, e in res.get("offsets", {}).items()}
        for b, end in offsets.items():
            ranges.setdefault(b, (offsets.get(b - 1, {}), end))
        for batch_id, _entered, vis, _n in res.get("visible", []):
            if batch_id not in ranges:
                continue
            start, end = ranges[batch_id]
            for p, e in end.items():
                for o in range(start.get(p, 0), e):
                    seen.setdefault((p, o), vis)
    lat = [seen[k] - sender.sent[k] for k in sender.measured if k in seen]
    missing = sum(1 for k in sender.measured if k not in seen)
    out: dict[str, Any] = {
        "measured": len(sender.measured), "missing": missing,
        "latency_p50": _r(_pct(lat, 0.5)), "latency_p90": _r(_pct(lat, 0.9)),
        "latency_p99": _r(_pct(lat, 0.99)), "latency_max": _r(max(lat) if lat else None),
    }
    if realtime:
        eps = [e for e in res.get("epochs", []) if "open" in e]
        by_epoch: dict[int, list[dict[str, Any]]] = {}
        for e in eps:
            by_epoch.setdefault(e["epoch"], []).append(e)
        spans = [max(x.get("close", x["open"]) for x in v) - min(x["open"] for x in v) for v in by_epoch.values()]
        opens = sorted(min(x["open"] for x in v) for v in by_epoch.values())
        out.update(epochs=len(by_epoch), epoch_span_p50=_r(_pct(spans, 0.5)),
                   epoch_gap_p50=_r(_pct([b - a for a, b in zip(opens, opens[1:])], 0.5)),
                   partitions_with_rows=len({p for (p, _o) in seen}))
        # rows of one (partition, epoch) reach process() together: the spread within a file
        return out
    vis = res.get("visible", [])
    # batches with data, by their offset range (numInputRows is 0 when the sink reads nothing)
    def rows(p: dict[str, Any]) -> int:
        return sum(int(o) - int(p["start"].get(k, 0)) for k, o in p["end"].items())

    data = [p for p in res.get("progress", []) if p.get("end") and rows(p) > 0]
    out.update(
        batches=len(data), rows_per_batch_p50=_r(_pct([rows(p) for p in data], 0.5), 1),
        batch_gap_p50=_r(_pct([b[1] - a[1] for a, b in zip(vis, vis[1:])], 0.5)),
        in_batch_p50=_r(_pct([b[2] - b[1] for b in vis], 0.5), 4),
        durations_ms_p50={k: _pct([p["durationMs"].get(k, 0) for p in data], 0.5) for k in DURATION_KEYS},
    )
    return out


class _Child:
    def __init__(self, name: str, variant: dict[str, Any], settings: Settings, work: Path, max_offsets: int):
        from benchmarks.bench_freshness import _child_env, _write_config

        cfg = _write_config(settings, work / f"{name}.yaml")
        spec = {"name": name, "variant": variant, "config": str(cfg), "work": str(work / name),
                "bootstrap": ",".join(settings.kafka.bootstrap_servers), "max_offsets": max_offsets}
        (work / name).mkdir(parents=True, exist_ok=True)
        spec_path = work / f"{name}.json"
        spec_path.write_text(json.dumps(spec))
        env = _child_env(Path(settings.feature_repo_path).resolve().parent)
        self.log = open(work / f"{name}.stderr", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_microbatch_floor", "--child",
                                      str(spec_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, env=env, text=True, start_new_session=True)
        self.work = work

    def read(self, timeout: float = 600) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                tail = (self.work / Path(self.log.name).name).read_text(errors="replace")[-600:]
                raise ServiceError(f"the Spark child exited: {tail.strip().splitlines()[-1] if tail.strip() else '?'}")
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        raise ServiceError("the Spark child did not answer in time")

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        try:
            self.send(cmd="exit")
            self.proc.wait(60)
        except Exception:  # noqa: BLE001
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        self.log.close()


def run(settings: Settings, size: int | None = None, repeats: int = 1, rates: Iterable[float] | None = None,
        duration: float | None = None, mode: str = "microbatch", variants: Iterable[str] | None = None,
        partitions: int = 2, warmup: float = 5.0, drain: float = 60.0, progress=None, **_: Any) -> dict[str, Any]:
    """See the module's docstring. ``size`` is unused (the rates and duration size the runs)."""
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    from benchmarks.bench_freshness import _CpuTree

    rates = tuple(rates or DEFAULT_RATES)
    duration = duration or DEFAULT_DURATION
    names = tuple(variants or MODE_VARIANTS[mode])
    check_args(rates, duration, names)
    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    bootstrap = settings.kafka.bootstrap_servers
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-floor")
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    work = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    topics: list[str] = []
    runs: list[dict[str, Any]] = []
    try:
        for name in names:
            variant = VARIANTS[name]
            realtime = variant.get("mode") == "realtime"
            say(f"{name}: starting Spark ({variant.get('master', 'local[2]')})")
            child = _Child(name, variant, settings, work, settings.stream.max_offsets_per_trigger)
            try:
                ready = child.read()
                for rep in range(repeats):
                    for rate in rates:
                        topic = f"bench-floor-{name.replace('_', '-')}-{int(rate)}-{uuid.uuid4().hex[:8]}"
                        admin.create_topics([NewTopic(topic, partitions, 1)])
                        topics.append(topic)
                        child.send(cmd="start", topic=topic)
                        started = child.read()
                        if started["event"] == "error":
                            runs.append({"variant": name, "rate": rate, "repeat": rep, "error": started["error"]})
                            say(f"{name} @ {rate:g}/s: {started['error']}")
                            break
                        sender = _Sender(producer, topic, partitions)
                        for _ in range(partitions):
                            sender.send(measured=False)
                        child.send(cmd="warm", ends=sender.ends())
                        warm = child.read()
                        if not warm.get("ok"):
                            say(f"{name} @ {rate:g}/s: the query did not process its first record "
                                f"({warm.get('error') or 'timeout'})")
                        load0 = _load()
                        cpu = _CpuTree(child.proc.pid)
                        say(f"{name} @ {rate:g}/s: sending for {warmup:g} + {duration:g} s (load {load0})")
                        sender.steady(rate, warmup, measured=False)
                        c_m0, w_m0 = cpu.sample(), time.time()
                        reached = sender.steady(rate, duration, measured=True)
                        c_m1, w_m1 = cpu.sample(), time.time()
                        load1 = _load()
                        child.send(cmd="stop", ends=sender.ends(), drain=drain)
                        res = child.read()
                        fig = {"variant": name, "mode": "realtime" if realtime else "microbatch",
                               "sink": "foreach" if realtime else variant.get("sink", "collect"),
                               "master": ready.get("master"), "partitions": partitions, "rate": rate,
                               "rate_reached": round(reached, 1), "repeat": rep, "load_1m_start": load0,
                               "load_1m_end": load1, "drained": res["drained"], "error": res["error"],
                               "send_errors": sender.lost,
                               "child_cpu_share": _r((c_m1 - c_m0) / max(1e-9, w_m1 - w_m0) / (os.cpu_count() or 1)),
                               **_figures(res, sender, realtime)}
                        runs.append(fig)
                        say(f"{name} @ {rate:g}/s: p50 {fig['latency_p50']} p99 {fig['latency_p99']} s, "
                            f"missing {fig['missing']}, load {load0}-{load1}"
                            + (f", error: {fig['error']}" if fig["error"] else ""))
            finally:
                child.close()
    finally:
        # Deleted only now: a producer (or a Spark consumer) still holding a topic's metadata
        # re-creates it on its next refresh when the broker auto-creates topics.
        producer.close(timeout=10)
        for t in list(topics):
            try:
                admin.delete_topics([t])
                topics.remove(t)
            except Exception:  # noqa: BLE001 - named in topics_left
                pass
        admin.close()
        shutil.rmtree(work, ignore_errors=True)
    return {"runs": runs, "summary": summarize(runs), "topics_left": topics, "partitions": partitions,
            "duration": duration, "warmup": warmup, "repeats": repeats, "cores": os.cpu_count()}


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians over repeats per (variant, rate)."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in runs:
        if "latency_p50" in r:
            groups.setdefault((r["variant"], r["rate"]), []).append(r)
    out = []
    for (name, rate), rs in groups.items():
        med = {k: _r(statistics.median([r[k] for r in rs if r.get(k) is not None]))
               if any(r.get(k) is not None for r in rs) else None
               for k in ("latency_p50", "latency_p99", "latency_max", "load_1m_start", "child_cpu_share",
                         "rows_per_batch_p50", "batch_gap_p50", "epoch_span_p50", "epoch_gap_p50")}
        row = {"variant": name, "rate": rate, "runs": len(rs), "missing": sum(r["missing"] for r in rs), **med}
        if "durations_ms_p50" in rs[0]:
            row["durations_ms_p50"] = {k: statistics.median([r["durations_ms_p50"][k] or 0 for r in rs])
                                       for k in DURATION_KEYS}
        out.append(row)
    return out


def table(result: dict[str, Any]) -> str:
    lines = ["variant | rate | p50 / p99 / max (s) | missing | rows/batch | gap (s) | durationMs p50 "
             "(latestOffset/plan/getBatch/addBatch/wal/commit/trigger) | cpu | load"]
    for s in result["summary"]:
        d = s.get("durations_ms_p50")
        dd = "/".join(f"{d[k]:g}" for k in DURATION_KEYS) if d else \
            f"epoch span {s.get('epoch_span_p50')} gap {s.get('epoch_gap_p50')}"
        lines.append(f"{s['variant']} | {s['rate']:g} | {s['latency_p50']} / {s['latency_p99']} / {s['latency_max']}"
                     f" | {s['missing']} | {s.get('rows_per_batch_p50')} | {s.get('batch_gap_p50')} | {dd} | "
                     f"{s['child_cpu_share']} | {s['load_1m_start']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child_main(argv[1])
        return 0
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_microbatch_floor", description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="10,100,1000")
    ap.add_argument("--duration", type=float, default=DEFAULT_DURATION, help="measured seconds per rate")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--mode", choices=sorted(MODE_VARIANTS), default="microbatch")
    ap.add_argument("--variants", help=f"comma-separated, overrides --mode's: {', '.join(VARIANTS)}")
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--config", type=Path)
    ap.add_argument("--json", action="store_true", help="one JSON line with every figure ends stdout")
    args = ap.parse_args(argv)
    from skewless.settings import load_settings

    try:
        variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
        rates = parse_rates(args.rates)
        check_args(rates, args.duration, variants)
        result = run(load_settings(args.config), repeats=args.repeats, rates=rates, duration=args.duration,
                     mode=args.mode, variants=variants, partitions=args.partitions, warmup=args.warmup)
    except (ConfigError, ServiceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(table(result), file=sys.stderr)
    if args.json:
        print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
