"""Freshness of the online store: the streaming feature job (``skewless etl stream``) against
the batch path (``ingest consume`` -> ``etl run`` -> ``features materialize``), in one run.

Everything runs on private resources, removed at the end: a private ``redis-server`` (the
project's persistence flags; its own ``INFO commandstats`` counts only this benchmark), Kafka
topics and a Feast project with unique names on the shared broker, a state dir and lake under
``<state_dir>/bench/``. The stream, the server and the batch steps are the real CLI commands,
run as child processes (the stream in its own process group, stopped with SIGTERM so it prints
its ``--json`` summary, then the group is killed: no JVM is left behind).

1. **Steady rates** (``rates``, default 1,000 and 5,000 events/s). For each rate a fresh
   project (topics, Feast project, server: a backlog a rate leaves never reaches the next) and
   a stream job are started, one event is sent and the job is "ready" once it applied it; then
   transactions with ``event_time`` = send time
   go to Kafka at the rate (librdkafka, ``_LoadProducer``: acks=all, idempotent, cheap enough not
   to take the job's CPU) for ``warmup`` +
   ``duration`` seconds. Every ``probe_every`` seconds one of them is a *probe*: a user never
   seen before, so the probe view's 1h count goes from nothing to 1 at a known time.
   ``/v1/features`` (``skewless serve``, a child process) is polled every ``poll_s`` for the
   probes whose hop boundary has passed (then less often the longer one stays invisible: every
   10% of its wait, at most 1 s), and for all pending ones once a second, to catch a value
   shown *before* its boundary, which the semantics forbid. Per probe, from the send
   acknowledgment (``ack``) to the first response showing the count (``visible``):
   latency = visible - ack = semantics + system, where semantics = max(0, boundary - ack) is
   the wait the definitions impose (an event counts from its hop boundary on) and system =
   visible - max(ack, boundary) is the stream's (micro-batch, commit, publication, poll).
   Only probes sent in the measured window count; a probe still invisible when the drain ends
   counts with the time waited, so percentiles it reaches are lower bounds
   (``latency_censored``). Events/s applied: between the commit before the one that applied
   the window's first event and the one that applied its last (the status hash's counter,
   sampled every 0.25 s), with the batches in between (``commits``: events/seconds each);
   Redis write commands per applied event (``COMMAND INFO`` flag "write") over the same span.
   Over the window: the stream's CPU share (its process and children — the JVM — over all
   cores), the server's and this process's (producer and poller), Redis's own CPU, the lag
   the job reports. From the job's summary: micro-batch phase medians (read, parse, compute,
   commit, publish), online rows published per event.
2. **Catch-up**: ``size`` simulated transactions over one day (``ingestion.producer.produce``,
   with their labels) are in fresh topics before a stream job starts (``--until-idle``).
   Events/s = events applied / (first micro-batch planned, the checkpoint's ``offsets/``, ->
   the last micro-batch's transaction in the state, ``committed_at``); also with the job's start-up.
3. **Baseline**: the batch path for the same kind of event on the catch-up project (the stream
   stopped): a warm cycle lands and computes the backlog (not timed), then probes are sent and
   one cycle ``ingest consume`` -> ``etl run`` -> ``features materialize`` is timed, and the
   probes are polled until visible. (A probe whose hop boundary had not passed when
   materialize read the tables needs another materialize after it: counted.) This is the
   freshness of today's path when its cycle runs back to back; scheduled hourly or nightly,
   add the schedule's period.

Targets (issue 11): p99 <= 1 s at 1,000 events/s, <= 2 s at 5,000, catch-up >= 20,000
events/s; reported as met or not, never asserted. The machine is shared: the load average is
in the figures.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from skewless.errors import ConfigError, ServiceError
from skewless.services.redis_server import PrivateRedis
from skewless.settings import Settings

PROBE_VIEW, PROBE_FEATURE = "user_spend", "count_1h"  # a new user's 1h count: nothing -> 1
DEFAULT_RATES = (1000.0, 5000.0)
P99_TARGET_S = {1000.0: 1.0, 5000.0: 2.0}
CATCHUP_TARGET = 20_000.0
MAX_RATE = 50_000.0
DEFAULT_SIZE = 200_000
DEFAULT_DURATION = 120.0
MIN_DURATION = 5.0
MIN_CATCHUP = 1_000
CORES = os.cpu_count() or 1


# -- arguments ------------------------------------------------------------------------------
def parse_rates(text: str) -> tuple[float, ...]:
    """``"1000,5000"`` -> (1000.0, 5000.0); a clear ConfigError otherwise."""
    try:
        rates = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--rates takes events/s separated by commas (e.g. 1000,5000), got {text!r}") from None
    if not rates:
        raise ConfigError(f"--rates takes events/s separated by commas (e.g. 1000,5000), got {text!r}")
    return rates


def validate(size: int, rates: Iterable[float], duration: float, warmup: float, probe_every: float) -> None:
    """Argument checks, before any service is touched."""
    rates = tuple(rates)
    if not rates:
        raise ConfigError("freshness needs at least one steady rate (--rates)")
    bad = [r for r in rates if not (math.isfinite(r) and 0 < r <= MAX_RATE)]
    if bad:
        raise ConfigError(f"--rates must be events/s in (0, {MAX_RATE:,.0f}], got {', '.join(f'{r:g}' for r in bad)}")
    if len(set(rates)) != len(rates):
        raise ConfigError(f"--rates names a rate twice: {', '.join(f'{r:g}' for r in rates)}")
    if not (math.isfinite(duration) and duration >= MIN_DURATION):
        raise ConfigError(f"--duration must be at least {MIN_DURATION:g} s per rate for freshness "
                          f"(a probe every {probe_every:g} s), got {duration:g}")
    if warmup < 0:
        raise ConfigError(f"warmup must be >= 0 s, got {warmup:g}")
    if not 0 < probe_every <= duration:
        raise ConfigError(f"probe_every must be in (0, duration], got {probe_every:g}")
    if size < MIN_CATCHUP:
        raise ConfigError(f"--size is the catch-up backlog in events for freshness: at least {MIN_CATCHUP:,}, "
                          f"got {size:,}")


def check_args(size: int | None = None, rates: Iterable[float] | None = None, duration: float | None = None,
               warmup: float = 10.0, probe_every: float = 0.25, **_: Any) -> None:
    """``validate`` with this benchmark's defaults for what is not given (the CLI calls it
    before loading settings or touching a service)."""
    validate(DEFAULT_SIZE if size is None else size, DEFAULT_RATES if rates is None else rates,
             DEFAULT_DURATION if duration is None else duration, warmup, probe_every)


# -- small helpers --------------------------------------------------------------------------
def _iso(t_us: int) -> str:
    return datetime.fromtimestamp(t_us // 1_000_000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + \
        f".{t_us % 1_000_000:06d}Z"


def _pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(q / 100 * len(v)) - 1))]


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def _private(settings: Settings, root: Path, name: str, redis_url: str) -> Settings:
    """``settings`` with its own topics, Feast project, consumer group, state dir and lake,
    on the private Redis; no prediction log (the benchmark never predicts)."""
    tag = uuid.uuid4().hex[:8]
    return settings.model_copy(update={
        "state_dir": root / name / "state", "lake_path": str(root / name / "lake"),
        "feast_project": f"fresh{name}{tag}", "redis_url": redis_url, "redis_password": None,
        "online_store": "redis",
        "topics": settings.topics.model_copy(update={
            "transactions": f"bench-fresh-tx-{tag}", "labels": f"bench-fresh-lb-{tag}",
            "predictions": f"bench-fresh-pr-{tag}"}),
        "kafka": settings.kafka.model_copy(update={"consumer_group": f"bench-fresh-{tag}"}),
        "serving": settings.serving.model_copy(update={"log_predictions": False, "api_key": None}),
    })


def _write_config(s: Settings, path: Path) -> Path:
    """The settings as a file for the child processes (secrets stay in the environment)."""
    import yaml

    data = s.model_dump(mode="json", exclude={"config_file"})
    data["kafka"].pop("sasl_password", None)
    data.pop("redis_password", None)
    data["serving"].pop("api_key", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


CHECKOUT = Path(__file__).resolve().parent.parent  # the code the children run (cli, stages)


def _child_env(repo_root: Path) -> dict[str, str]:
    """The environment of the children: no SKEWLESS_* setting (it would beat the file the
    benchmark writes) but the Kafka password; the checkout and the directory holding the
    feature repository (``repo_root``, its definitions are imported by name) on PYTHONPATH."""
    keep = {"SKEWLESS_KAFKA__SASL_PASSWORD"}
    env = {k: v for k, v in os.environ.items()
           if (not k.upper().startswith("SKEWLESS_") or k.upper() in keep)
           and k not in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")}
    # The feature repository's parent first (and as the children's working directory): the
    # name ``feature_repo`` must import the definitions in settings, not the checkout's.
    paths = dict.fromkeys([str(repo_root), str(CHECKOUT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    return env


class _CpuTree:
    """CPU seconds of a process and all its descendants (the stream's JVM), counting the last
    value seen of a child that has exited (sample often enough); with ``children=False``, of
    the process alone (this one: its producer and poller threads, not the jobs it started)."""

    def __init__(self, pid: int, children: bool = True):
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid)
        self.children = children
        self.seen: dict[tuple[int, float], float] = {}

    def sample(self) -> float:
        psutil = self._psutil
        try:
            procs = [self.root, *(self.root.children(recursive=True) if self.children else ())]
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            try:
                t = p.cpu_times()
                self.seen[(p.pid, p.create_time())] = t.user + t.system
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        return sum(self.seen.values())


class _Child:
    """A CLI command as a child process in its own process group, its stdout/stderr in files."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path, logs: Path):
        logs.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.out_path, self.err_path = logs / f"{name}.out", logs / f"{name}.err"
        self._out, self._err = open(self.out_path, "wb"), open(self.err_path, "wb")
        self.started = time.time()
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self._out, stderr=self._err,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.cpu = _CpuTree(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 2000) -> str:
        try:
            return self.err_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def summary(self) -> dict[str, Any] | None:
        try:
            lines = [ln for ln in self.out_path.read_text(errors="replace").splitlines() if ln.strip()]
            return json.loads(lines[-1]) if lines else None
        except (OSError, ValueError):
            return None

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 180.0) -> None:
        """SIGTERM to the command (the stream stops its query and prints its summary), then
        the process group is killed (a JVM it started, whatever is left)."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            if self.wait(timeout) is None:
                self._killpg()
                self.wait(10)
        self._killpg()
        for fh in (self._out, self._err):
            fh.close()

    def _killpg(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group this benchmark created
        except (ProcessLookupError, PermissionError):
            pass


def _run_cli(args: list[str], cfg: Path, env: dict[str, str], cwd: Path, timeout: float = 1800) -> tuple[float, dict]:
    """``skewless <args> --config cfg --json``: (wall seconds including the process start, summary)."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cli", *args, "--config", str(cfg), "--json"], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(f"skewless {' '.join(args)} failed ({done.returncode}): {done.stderr[-1500:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


class _BenchRedis(PrivateRedis):
    """The benchmark's own redis-server (the project's persistence flags), with the counters
    the figures read."""

    def __init__(self, root: Path) -> None:
        super().__init__(root / "redis", persistent=True)
        self._writes: dict[str, bool] = {}

    def stats(self) -> dict[str, Any]:
        cmd = self.client.info("commandstats")
        cpu = self.client.info("cpu")
        calls = {k[len("cmdstat_"):]: (v["calls"], v["usec"]) for k, v in cmd.items()}
        return {"calls": calls, "cpu": float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])}

    def is_write(self, name: str) -> bool:
        if name not in self._writes:
            base = name.split("|")[0]
            try:
                info = self.client.execute_command("COMMAND", "INFO", base) or {}
                flags = (info.get(base) or {}).get("flags", []) if isinstance(info, dict) else []
            except Exception:  # noqa: BLE001 - an unknown command is not a write we can name
                flags = []
            self._writes[name] = "write" in [f.decode() if isinstance(f, bytes) else f for f in flags]
        return self._writes[name]


def _redis_delta(redis: _BenchRedis, a: dict[str, Any], b: dict[str, Any], events: int, seconds: float,
                 prefix: str) -> dict[str, Any]:
    """Redis commands between two ``stats`` samples, per applied event."""
    per = max(events, 1)
    before = a["calls"]
    delta = {n: (c - before.get(n, (0, 0))[0], u - before.get(n, (0, 0))[1]) for n, (c, u) in b["calls"].items()}
    delta = {n: d for n, d in delta.items() if d[0] > 0}
    writes = {n: d for n, d in delta.items() if redis.is_write(n)}
    top = sorted(writes.items(), key=lambda kv: -kv[1][0])[:6]
    return {
        f"{prefix}redis_writes_per_event": _r(sum(c for c, _ in writes.values()) / per, 2),
        f"{prefix}redis_commands_per_event": _r(sum(c for c, _ in delta.values()) / per, 2),
        f"{prefix}redis_write_mix_per_event": ", ".join(f"{n} {c / per:.2f}" for n, (c, _) in top) or "-",
        f"{prefix}redis_usec_per_event": _r(sum(u for _, u in delta.values()) / per, 1),
        f"{prefix}redis_cpu_share": _r((b["cpu"] - a["cpu"]) / (seconds * CORES), 3) if seconds > 0 else None,
    }


# -- probes ---------------------------------------------------------------------------------
@dataclass
class _Probe:
    user: str
    event_t: float  # the event's event_time (unix s): when it was sent
    boundary: float  # the hop boundary from which the definitions count it
    measured: bool
    ack: float | None = None
    visible: float | None = None
    failed: bool = False
    next_poll: float = 0.0  # the poller's schedule

    def acked(self, _metadata: Any) -> None:
        self.ack = time.time()

    def lost(self, _exc: BaseException) -> None:
        self.failed = True


def _transaction(tid: str, user: str, merchant: str, amount: float, t_us: int) -> dict[str, Any]:
    return {"schema_version": 2, "transaction_id": tid, "user_id": user, "merchant_id": merchant, "amount": amount,
            "currency": "EUR", "country": "FR", "channel": "web", "device_id": f"d-{user}", "event_time": _iso(t_us),
            "mcc": "5411"}


class _Poller(threading.Thread):
    """Polls ``POST /v1/features`` for pending probes (those past their boundary every
    ``poll_s``, all of them once a second) and stamps the first response showing count >= 1."""

    def __init__(self, base: str, feature: str, poll_s: float):
        super().__init__(daemon=True, name="freshness-poller")
        host, port = base.removeprefix("http://").split(":")
        self.host, self.port, self.feature, self.poll_s = host, int(port), feature, poll_s
        self.pending: dict[str, _Probe] = {}
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.polls = self.errors = self.early = 0
        self.rtts: list[float] = []
        self._conn: http.client.HTTPConnection | None = None

    def add(self, probe: _Probe) -> None:
        with self.lock:
            self.pending[probe.user] = probe

    def waiting(self, measured_only: bool = True) -> int:
        with self.lock:
            return sum(1 for p in self.pending.values() if p.measured or not measured_only)

    def _post(self, users: list[str]) -> list[Any] | None:
        body = json.dumps({"features": [self.feature], "entities": [{"user_id": u} for u in users]})
        for attempt in (0, 1):
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
                self._conn.request("POST", "/v1/features", body, {"Content-Type": "application/json"})
                resp = self._conn.getresponse()
                raw = resp.read()
                if resp.status != 200:
                    self.errors += 1
                    return None
                return [r["values"][0] for r in json.loads(raw)["results"]]
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                if attempt:
                    self.errors += 1
        return None

    def run(self) -> None:
        next_all = 0.0
        while not self.halt.is_set():
            start = time.time()
            with self.lock:
                items = list(self.pending.values())
            if start >= next_all:
                due, next_all = items, start + 1.0
            else:
                # Past its boundary a probe is polled every poll_s at first, then less often the
                # longer it stays invisible (every 10% of its wait so far, at most 1 s): the
                # resolution stays within 10% while a stream far behind is not flooded with reads.
                due = [p for p in items if p.boundary <= start + self.poll_s and start >= p.next_poll]
            for p in due:
                p.next_poll = start + min(1.0, max(self.poll_s, 0.1 * (start - max(p.boundary, p.event_t))))
            for i in range(0, len(due), 500):
                chunk = due[i:i + 500]
                t_req = time.time()
                values = self._post([p.user for p in chunk])
                t_recv = time.time()
                self.polls += 1
                self.rtts.append(t_recv - t_req)
                if values is None:
                    continue
                for p, v in zip(chunk, values):
                    if v is not None and v >= 1:
                        p.visible = t_recv
                        if t_recv < p.boundary:
                            self.early += 1  # shown before the boundary: the semantics forbid it
                        with self.lock:
                            self.pending.pop(p.user, None)
            self.halt.wait(max(0.0, self.poll_s - (time.time() - start)))
        if self._conn is not None:
            self._conn.close()


class _LoadProducer:
    """The steady phases' producer: librdkafka (``confluent_kafka``, C), acks=all and
    idempotent like the project's. At 5,000 events/s kafka-python's producer (pure Python)
    took most of a core of this 2-core machine from the job under test; librdkafka sends
    the same records for a small share of that. Delivery reports are served by a thread
    blocked in ``poll``, so a probe's ack time is stamped when the broker's answer arrives."""

    def __init__(self, settings: Settings):
        from confluent_kafka import Producer

        k = settings.kafka
        conf = {"bootstrap.servers": ",".join(k.bootstrap_servers), "security.protocol": k.security_protocol,
                "acks": "all", "enable.idempotence": True, "linger.ms": 5}
        if k.sasl_mechanism:
            conf.update({"sasl.mechanism": k.sasl_mechanism, "sasl.username": k.sasl_username or "",
                         "sasl.password": k.sasl_password.get_secret_value() if k.sasl_password else ""})
        self._p = Producer(conf)
        self._halt = threading.Event()
        self._reports = threading.Thread(target=self._serve, daemon=True, name="freshness-acks")
        self._reports.start()

    def _serve(self) -> None:
        while not self._halt.is_set():
            self._p.poll(0.05)

    def send(self, topic: str, key: bytes, value: bytes, on_ack: Callable[[Any], None] | None = None,
             on_error: Callable[[BaseException], None] | None = None) -> None:
        def delivered(err, msg) -> None:
            if err is not None:
                if on_error is not None:
                    on_error(RuntimeError(str(err)))
            elif on_ack is not None:
                on_ack(msg)

        while True:
            try:
                self._p.produce(topic, value=value, key=key, on_delivery=delivered)
                return
            except BufferError:  # librdkafka's queue is full: let it drain
                time.sleep(0.001)

    def flush(self, timeout: float = 30) -> None:
        left = self._p.flush(timeout)
        if left:
            raise ServiceError(f"{left} benchmark records were not delivered within {timeout:.0f} s")

    def close(self, timeout: float = 30) -> None:
        try:
            self._p.flush(timeout)
        finally:
            self._halt.set()
            self._reports.join(timeout=5)


class _Steady(threading.Thread):
    """Transactions at ``rate`` events/s, event_time = send time, for ``seconds``; every
    ``probe_every`` seconds one is a probe (a new user). Counts what it sent by a given time."""

    def __init__(self, producer, topic: str, rate: float, t0: float, seconds: float, window: tuple[float, float],
                 probe_every: float, hop_us: int, users: int, merchants: int, tag: str, poller: _Poller, seed: int):
        super().__init__(daemon=True, name="freshness-producer")
        self.producer, self.topic, self.rate, self.t0, self.seconds = producer, topic, rate, t0, seconds
        self.window, self.probe_every, self.hop_us = window, probe_every, hop_us
        self.users, self.merchants, self.tag, self.poller, self.seed = users, merchants, tag, poller, seed
        self.sent = 0
        self.failures: list[BaseException] = []
        self.probes: list[_Probe] = []
        self.error: BaseException | None = None
        self.behind_max = 0.0  # the most the producer fell behind its schedule (s)

    def _probe(self, k: int) -> None:
        import orjson

        t_us = int(time.time() * 1_000_000)
        user = f"p{self.tag}{k:06d}"
        boundary = (t_us // self.hop_us + 1) * self.hop_us / 1e6
        t = t_us / 1e6
        p = _Probe(user, t, boundary, measured=self.window[0] <= t < self.window[1])
        self.probes.append(p)
        self.poller.add(p)
        rec = _transaction(f"tp{self.tag}{k}", user, "m-probe", 10.0, t_us)
        self.producer.send(self.topic, key=user.encode(), value=orjson.dumps(rec), on_ack=p.acked, on_error=p.lost)

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc

    def _run(self) -> None:
        import numpy as np
        import orjson

        rng = np.random.default_rng(self.seed)
        n = 1 << 16
        us = [f"u{x:06d}" for x in rng.integers(0, self.users, n)]
        ms = [f"m{x:05d}" for x in rng.integers(0, self.merchants, n)]
        amounts = np.round(rng.lognormal(3.3, 0.7, n), 2).clip(0.01, 50_000).tolist()
        keys = [u.encode() for u in us]
        send, errback = self.producer.send, self.failures.append
        while time.time() < self.t0:
            time.sleep(0.001)
        next_probe, k = 0.0, 0
        while True:
            elapsed = time.time() - self.t0
            if elapsed >= self.seconds:
                break
            target = min(int(self.rate * elapsed) + 1, int(self.rate * self.seconds))
            self.behind_max = max(self.behind_max, (target - self.sent) / self.rate)
            t_us = int(time.time() * 1_000_000)
            while self.sent < target:
                if elapsed >= next_probe:
                    self._probe(k)
                    k += 1
                    next_probe += self.probe_every
                else:
                    i = self.sent & (n - 1)
                    rec = _transaction(f"t{self.tag}{self.sent}", us[i], ms[i], amounts[i], t_us)
                    send(self.topic, key=keys[i], value=orjson.dumps(rec), on_error=errback)
                self.sent += 1
            time.sleep(0.005)
        self.producer.flush(timeout=120)


def _commits(samples: list[dict[str, Any]], m1: dict[str, Any] | None, m2: dict[str, Any]) -> str:
    """The micro-batches between two commits, as seen by the sampler: "events/seconds" each."""
    if m1 is None:
        return "-"
    out, last = [], m1
    for x in samples:
        if m1["t"] < x["t"] <= m2["t"] and x["events"] != last["events"]:
            out.append(f"{x['events'] - last['events']}/{x['t'] - last['t']:.1f}s")
            last = x
    return " ".join(out[:12]) + (" ..." if len(out) > 12 else "") or "-"


def _probe_figures(probes: list[_Probe], prefix: str, gave_up_at: float) -> dict[str, Any]:
    """Latency percentiles over the measured probes. A probe never seen by ``gave_up_at``
    counts with ``gave_up_at - ack`` (so a percentile it reaches is a lower bound, flagged by
    ``latency_censored``); semantics and system parts are over the probes seen."""
    measured = [p for p in probes if p.measured and p.ack is not None]
    seen = [p for p in measured if p.visible is not None]
    lat = [(p.visible if p.visible is not None else gave_up_at) - p.ack for p in measured]
    sem = [max(0.0, p.boundary - p.ack) for p in seen]
    sys_ = [p.visible - max(p.ack, p.boundary) for p in seen]
    out: dict[str, Any] = {f"{prefix}probes": sum(1 for p in probes if p.measured),
                           f"{prefix}probes_visible": len(seen),
                           f"{prefix}probes_never_visible": len(measured) - len(seen),
                           f"{prefix}probes_not_acked": sum(1 for p in probes if p.measured and p.ack is None)}
    for name, xs in (("latency", lat), ("semantics_wait", sem), ("system", sys_)):
        for q, label in ((50, "p50"), (99, "p99"), (100, "max")):
            out[f"{prefix}{name}_{label}_s"] = _r(_pct(xs, q))
    out[f"{prefix}latency_censored"] = len(measured) - len(seen)  # > 0: the latency figures are lower bounds
    return out


# -- the benchmark ----------------------------------------------------------------------------
class _Bench:
    def __init__(self, settings: Settings, root: Path, size: int, seed: int):
        from skewless.features.definitions import load

        self.base, self.root, self.size, self.seed = settings, root, size, seed
        self.repo_root = Path(settings.feature_repo_path).resolve().parent
        self.env = _child_env(self.repo_root)
        self.definitions = load(settings)
        view = next((v for v in self.definitions.views if v.name == PROBE_VIEW), None)
        if view is None or PROBE_FEATURE not in view.features or tuple(view.join_keys) != ("user_id",):
            raise ConfigError(f"the freshness probe reads {PROBE_VIEW}:{PROBE_FEATURE} keyed by user_id, which the "
                              f"definitions in {settings.feature_repo_path} do not declare")
        self.hop_us = int(view.hop_td.total_seconds() * 1_000_000)
        self.children: list[_Child] = []
        self.topics_left: list[str] = []
        self.backlog: int | None = None  # valid events produced into the catch-up project
        self.consume_stopped = 0  # ingest consume runs that had landed everything but did not exit
        self._rows: dict[str, int] = {}
        self.projects: list[Settings] = []
        self.redis = _BenchRedis(root)

    # resources
    def project(self, name: str) -> tuple[Settings, Path]:
        from skewless.features.store import apply
        from skewless.topics import ensure_topics

        s = _private(self.base, self.root, name, self.redis.url)
        self.projects.append(s)
        # The stream subscribes to transactions and labels (Spark's source fails on a topic that
        # does not exist) and ingest consume to all three: created before either starts.
        ensure_topics(s, [s.topics.transactions, s.topics.labels, s.topics.predictions])
        apply(s, self.definitions)
        return s, _write_config(s, self.root / name / "skewless.yaml")

    def child(self, name: str, args: list[str], cfg: Path) -> _Child:
        c = _Child(name, [sys.executable, "-m", "cli", *args, "--config", str(cfg)], self.env, self.repo_root,
                   self.root / "logs")
        self.children.append(c)
        return c

    def server(self, s: Settings, cfg: Path):
        from skewless.services.server_process import ServerProcess, free_port

        port = free_port()
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        srv = ServerProcess("skewless serve", [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port",
                                               str(port), "--workers", "1", "--config", str(cfg)],
                            self.env, self.repo_root, self.root / "logs" / f"serve-{s.feast_project}.log", port)
        self.children.append(srv)  # type: ignore[arg-type]
        srv.wait_ready("/healthz", 180)
        # The plan for the probe feature is read from the registry once, before timing.
        from skewless.services.server_process import http_json

        status, body = http_json("POST", srv.base + "/v1/features",
                                 {"features": [f"{PROBE_VIEW}:{PROBE_FEATURE}"], "entities": [{"user_id": "warm"}]})
        if status != 200:
            raise ServiceError(f"skewless serve answered {status} to /v1/features: {str(body)[:300]}")
        return srv

    def lake_rows(self, s: Settings) -> int:
        """Rows landed in the lake for the project's transactions and labels."""
        import pyarrow.parquet as pq

        total = 0
        for topic in (s.topics.transactions, s.topics.labels):
            for f in (Path(s.lake_path) / "raw" / topic).rglob("*.parquet"):
                key = str(f)
                if key not in self._rows:
                    try:
                        self._rows[key] = pq.ParquetFile(f).metadata.num_rows
                    except (OSError, ValueError):
                        continue
                total += self._rows[key]
        return total

    def consume(self, s: Settings, cfg: Path, expected: int, until_idle: float, limit: float = 1800) -> float:
        """``ingest consume --until-idle``: its wall seconds. If it has landed every event but
        has not exited ``until_idle`` + 30 s later, it is stopped (SIGTERM: it lands, commits and
        exits) and counted in ``consume_stopped``; the time is then landing + ``until_idle``, what
        an exit on time would have taken."""
        c = self.child(f"consume-{len(self.children)}", ["ingest", "consume", "--until-idle", f"{until_idle:g}",
                                                         "--json"], cfg)
        t0 = time.perf_counter()
        landed = None
        while c.alive():
            now = time.perf_counter()
            if landed is None and self.lake_rows(s) >= expected:
                landed = now
            if landed is not None and now - landed > until_idle + 30:
                c.stop()
                self.consume_stopped += 1
                return landed - t0 + until_idle
            if now - t0 > limit:
                c.stop()
                raise ServiceError(f"ingest consume landed {self.lake_rows(s):,} of {expected:,} events in "
                                   f"{limit:.0f} s:\n{c.tail()}")
            time.sleep(0.25)
        seconds = time.perf_counter() - t0
        if c.proc.returncode:
            raise ServiceError(f"ingest consume failed ({c.proc.returncode}):\n{c.tail()}")
        return seconds

    def status(self, s: Settings):
        from skewless.features import stream_status

        return stream_status.read(self.redis.client, s.feast_project)

    def cleanup(self) -> None:
        for c in reversed(self.children):
            try:
                c.stop()
            except Exception:  # noqa: BLE001 - best effort: every child is stopped
                pass
        self.redis.stop()
        topics = [t for s in self.projects for t in (s.topics.transactions, s.topics.labels, s.topics.predictions)]
        self.topics_left = _drop_topics(self.base, topics, [s.kafka.consumer_group for s in self.projects])

    # 1. steady rates
    def wait_ready(self, s: Settings, job: _Child, producer, timeout: float = 600) -> None:
        """Until the stream job applied one event sent now (its JVM and query are running)."""
        import orjson

        before = (self.status(s).events if self.status(s) else 0)
        t_us = int(time.time() * 1_000_000)
        user = f"ready{uuid.uuid4().hex[:8]}"
        producer.send(s.topics.transactions, key=user.encode(),
                      value=orjson.dumps(_transaction(f"r{user}", user, "m-probe", 1.0, t_us)))
        producer.flush(timeout=30)
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(s)
            if st is not None and st.events > before:
                return
            if not job.alive():
                raise ServiceError(f"the stream job exited before it was ready:\n{job.tail()}")
            if time.monotonic() > deadline:
                raise ServiceError(f"the stream job applied nothing within {timeout:.0f} s:\n{job.tail()}")
            time.sleep(0.2)

    def steady(self, s: Settings, cfg: Path, srv, rate: float, duration: float, warmup: float, probe_every: float,
               poll_s: float, users: int, merchants: int, drain_s: float, seed: int) -> dict[str, Any]:
        prefix = f"r{rate:g}_"
        job = self.child(f"stream-{rate:g}", ["etl", "stream", "--json"], cfg)
        producer = _LoadProducer(s)
        poller = _Poller(srv.base, f"{PROBE_VIEW}:{PROBE_FEATURE}", poll_s)
        try:
            t_spawn = time.time()
            self.wait_ready(s, job, producer)
            ready_s = time.time() - t_spawn
            st = self.status(s)
            base = st.events if st else 0  # everything sent before is applied (the ready event came last)
            poller.start()
            t0 = time.time() + 0.2
            window = (t0 + warmup, t0 + warmup + duration)
            gen = _Steady(producer, s.topics.transactions, rate, t0, warmup + duration, window, probe_every,
                          self.hop_us, users, merchants, uuid.uuid4().hex[:6], poller, seed)
            gen.start()
            me, srv_cpu = _CpuTree(os.getpid(), children=False), _CpuTree(srv.proc.pid)

            def sample() -> dict[str, Any]:
                st = self.status(s)
                return {"t": time.time(), "events": st.events if st else 0, "lag": st.lag if st else None,
                        "batch": st.batch if st else None, "cpu": job.cpu.sample(), "srv": srv_cpu.sample(),
                        "me": me.sample(), "sent": gen.sent, "load": os.getloadavg()[0], "redis": self.redis.stats()}

            # Sampled every 0.25 s from the start to the end of the drain: the window's edges
            # (wall clock: CPU, rates sent, lag) and the two commits at which the stream had
            # applied the window's first and its last event (events/s applied, Redis per event).
            samples: list[dict[str, Any]] = []
            edges: list[dict[str, Any]] = []
            marks: list[dict[str, Any] | None] = [None, None]
            targets: list[int | None] = [None, None]
            drain_end: float | None = None
            while True:
                now = time.time()
                x = sample()
                samples.append(x)
                for i, edge in enumerate(window):
                    if len(edges) == i and x["t"] >= edge:
                        edges.append(x)
                        targets[i] = base + x["sent"]
                for i in (0, 1):
                    if marks[i] is None and targets[i] is not None and x["events"] >= targets[i]:
                        marks[i] = x
                if not job.alive():
                    raise ServiceError(f"the stream job died at {rate:g} events/s:\n{job.tail()}")
                if gen.error is not None:
                    raise gen.error
                if len(edges) == 2 and not gen.is_alive():
                    if drain_end is None:
                        # Drain: every measured probe visible (or given up on) and every event applied.
                        last_boundary = max((p.boundary for p in gen.probes), default=now)
                        drain_end = max(now, last_boundary) + drain_s
                    if (poller.waiting() == 0 and x["events"] >= base + gen.sent) or now >= drain_end:
                        break
                time.sleep(max(0.0, 0.25 - (time.time() - now)))
            drained = samples[-1]
        finally:
            poller.halt.set()
            producer.close(timeout=30)
        job.stop()
        poller.join(timeout=10)
        # No summary: the job was killed, stuck in a micro-batch longer than the stop's timeout
        # (its phases are then missing from the figures).
        summary = job.summary() or {}

        a, b = edges
        dt = b["t"] - a["t"]
        # Sustained: the events applied between the commit that applied the window's first event
        # and the one that applied its last, over the time between them (no latency bias).
        m1, m2 = marks[0], marks[1] or drained
        if m1 is not None:
            # From the commit before the one that applied the window's first event: whole
            # micro-batches between two commits (one batch can hold the whole window).
            i = next(k for k, x in enumerate(samples) if x is m1)
            if i > 0:
                level = samples[i - 1]["events"]
                m1 = next(x for x in samples if x["events"] == level)
        applied = m2["events"] - m1["events"] if m1 else 0
        span = m2["t"] - m1["t"] if m1 else 0.0
        in_window = [x for x in samples if a["t"] <= x["t"] <= b["t"]]
        lags = [x["lag"] for x in in_window if x["lag"] is not None]
        batches = (m2["batch"] or 0) - (m1["batch"] or 0) if m1 else 0
        out: dict[str, Any] = {
            f"{prefix}stream_ready_s": round(ready_s, 1),
            f"{prefix}produced_per_s": round((b["sent"] - a["sent"]) / dt, 1),
            f"{prefix}producer_behind_max_s": round(gen.behind_max, 3),
            f"{prefix}applied_per_s": round(applied / span, 1) if span > 0 else None,
            f"{prefix}window_applied_by_drain_end": marks[1] is not None,
            f"{prefix}commits": _commits(samples, m1, m2),
            f"{prefix}lag_end": b["lag"], f"{prefix}lag_max": max(lags) if lags else None,
            f"{prefix}lag_after_drain": drained["lag"],
            **_probe_figures(gen.probes, prefix, drained["t"]),
            f"{prefix}probes_visible_before_boundary": poller.early,
            f"{prefix}poll_errors": poller.errors,
            f"{prefix}poll_rtt_p50_ms": _r((_pct(poller.rtts, 50) or 0) * 1000, 2),
            f"{prefix}stream_cpu_share": round((b["cpu"] - a["cpu"]) / (dt * CORES), 3),
            f"{prefix}serve_cpu_share": round((b["srv"] - a["srv"]) / (dt * CORES), 3),
            f"{prefix}producer_poller_cpu_share": round((b["me"] - a["me"]) / (dt * CORES), 3),
            **(_redis_delta(self.redis, m1["redis"], m2["redis"], applied, span, prefix) if applied else {}),
            f"{prefix}online_rows_per_event": _r(summary["rows_published"] / max(summary["applied"], 1), 3)
            if summary else None,
            f"{prefix}stream_summary": "ok" if summary else "none (killed after the stop timeout)",
            f"{prefix}batches_applying_window": batches,
            f"{prefix}events_per_batch": _r(applied / batches, 1) if batches else None,
            f"{prefix}batch_seconds_p50": summary.get("batch_seconds_p50"),
            **{f"{prefix}phase_{k}": v for k, v in (summary.get("phase_seconds_p50") or {}).items()},
            f"{prefix}send_failures": len(gen.failures) + sum(p.failed for p in gen.probes),
            f"{prefix}load_avg_1m": round(sorted(x["load"] for x in in_window)[len(in_window) // 2], 2)
            if in_window else round(b["load"], 2),
        }
        p99 = out[f"{prefix}latency_p99_s"]
        target = P99_TARGET_S.get(rate)
        if target is not None:
            out[f"{prefix}target_p99_le_{target:g}s_met"] = p99 is not None and p99 <= target \
                and out[f"{prefix}probes_never_visible"] == 0
        return out

    # 2. catch-up
    def catchup(self, s: Settings, cfg: Path, size: int, seed: int, timeout: float) -> dict[str, Any]:
        from ingestion.producer import produce
        from skewless.lake_layout import LakeLayout

        t0 = time.perf_counter()
        produced = produce(s, events=size, seed=seed, days=1)
        produce_s = time.perf_counter() - t0
        expected = sum(t["valid"] for t in produced["topics"].values())
        self.backlog = expected
        a = self.redis.stats()
        job = self.child("stream-catchup", ["etl", "stream", "--json", "--until-idle", "5"], cfg)
        t_spawn = time.time()
        done: dict[str, Any] | None = None
        loads = []
        deadline = time.monotonic() + timeout
        while job.alive() and time.monotonic() < deadline:
            cpu = job.cpu.sample()
            loads.append(os.getloadavg()[0])
            st = self.status(s)
            if done is None and st is not None and st.events >= expected and st.lag == 0:
                done = {"t": time.time(), "cpu": cpu, "redis": self.redis.stats(), "events": st.events}
            time.sleep(0.25)
        finished = not job.alive()
        if done is None:  # finished between two polls, or the deadline passed
            st = self.status(s)
            done = {"t": time.time(), "cpu": job.cpu.sample(), "redis": self.redis.stats(),
                    "events": st.events if st else 0}
        job.stop()
        summary = job.summary() or {}
        if finished and not summary:
            raise ServiceError(f"the catch-up stream job failed:\n{job.tail()}")
        ck = LakeLayout.of(s).stream_checkpoint
        offsets = sorted((int(p.name), p.stat().st_mtime) for p in (ck / "offsets").iterdir() if p.name.isdigit())
        applied = summary.get("applied", done["events"])
        # First micro-batch planned (Spark's offset log) -> the last one's transaction in the
        # state (or the deadline, unfinished). Not Spark's last commit: the job applies a batch
        # while Spark reads the next, so Spark commits a batch before it is applied.
        end = self.status(s)
        last = end.committed_at if finished and end is not None and end.committed_at else done["t"]
        seconds = (last - offsets[0][1]) if offsets else 0.0
        wall = done["t"] - t_spawn
        return {
            "catchup_events_produced": produced["produced"], "catchup_events_valid": expected,
            "catchup_produce_s": round(produce_s, 1), "catchup_finished": finished,
            "catchup_events_applied": applied, "catchup_batches": summary.get("batches"),
            "catchup_seconds": round(seconds, 2),
            "catchup_events_per_s": round(applied / seconds) if seconds > 0 else None,
            "catchup_seconds_incl_start": round(wall, 1),
            "catchup_events_per_s_incl_start": round(applied / wall) if wall > 0 else None,
            "catchup_stream_cpu_share": round(done["cpu"] / (wall * CORES), 3) if wall > 0 else None,
            "catchup_lag_end": summary.get("lag"),
            "catchup_online_rows_per_event": _r(summary["rows_published"] / max(applied, 1), 3) if summary else None,
            "catchup_batch_seconds_p50": summary.get("batch_seconds_p50"),
            **{f"catchup_phase_{k}": v for k, v in (summary.get("phase_seconds_p50") or {}).items()},
            **_redis_delta(self.redis, a, done["redis"], applied, wall, "catchup_"),
            "catchup_load_avg_1m": round(sorted(loads)[len(loads) // 2], 2) if loads else None,
            "target_catchup_ge_20000_met": bool(finished and seconds > 0 and applied / seconds >= CATCHUP_TARGET),
        }

    # 3. the batch path
    def baseline(self, s: Settings, cfg: Path, probes: int, poll_s: float) -> dict[str, Any]:
        from ingestion.producer import make_producer

        if self.backlog is None:  # no catch-up ran: the same backlog, without a stream
            from ingestion.producer import produce

            produced = produce(s, events=self.size, seed=self.seed, days=1)
            self.backlog = sum(t["valid"] for t in produced["topics"].values())
        srv = self.server(s, cfg)
        # A warm cycle: the backlog landed, computed and loaded (the path's steady state, not timed).
        warm = {"consume": self.consume(s, cfg, self.backlog, 2.0)}
        for name, args in (("etl", ["etl", "run"]), ("materialize", ["features", "materialize"])):
            warm[name], _ = _run_cli(args, cfg, self.env, self.repo_root)
        poller = _Poller(srv.base, f"{PROBE_VIEW}:{PROBE_FEATURE}", poll_s)
        producer = make_producer(s)
        tag = uuid.uuid4().hex[:6]
        sent: list[_Probe] = []
        import orjson

        for k in range(probes):
            t_us = int(time.time() * 1_000_000)
            user = f"b{tag}{k:04d}"
            p = _Probe(user, t_us / 1e6, (t_us // self.hop_us + 1) * self.hop_us / 1e6, measured=True)
            rec = _transaction(f"tb{tag}{k}", user, "m-probe", 10.0, t_us)
            fut = producer.send(s.topics.transactions, key=user.encode(), value=orjson.dumps(rec))
            fut.add_callback(p.acked)
            fut.add_errback(p.lost)
            sent.append(p)
            poller.add(p)
            time.sleep(0.25)
        producer.flush(timeout=30)
        producer.close(timeout=30)
        poller.start()
        steps: dict[str, float] = {}
        summaries: dict[str, dict] = {}
        t_cycle = time.time()
        mat_start = t_cycle
        steps["consume"] = self.consume(s, cfg, self.backlog + len(sent), 1.0)
        for name, args in (("etl", ["etl", "run"]), ("materialize", ["features", "materialize"])):
            mat_start = time.time()
            steps[name], summaries[name] = _run_cli(args, cfg, self.env, self.repo_root)
        runs = 1
        while True:
            deadline = time.time() + 3
            while poller.waiting() and time.time() < deadline:
                time.sleep(0.05)
            if not poller.waiting() or runs >= 3:
                break
            # A probe whose hop boundary was still ahead when materialize read the tables (its
            # row is not due yet): the path needs one more materialize after the boundary.
            ahead = max(p.boundary for p in sent if p.visible is None)
            if ahead <= mat_start:
                break  # materialize could load it and did not: reported as never visible
            time.sleep(max(0.0, ahead - time.time()))
            mat_start = time.time()
            extra, _ = _run_cli(["features", "materialize"], cfg, self.env, self.repo_root)
            steps["materialize"] += extra
            runs += 1
        poller.halt.set()
        poller.join(timeout=10)
        lat = [p.visible - p.ack for p in sent if p.visible is not None and p.ack is not None]
        return {
            "baseline_probes": len(sent), "baseline_probes_visible": len(lat),
            "baseline_latency_p50_s": _r(_pct(lat, 50), 2), "baseline_latency_max_s": _r(_pct(lat, 100), 2),
            "baseline_cycle_s": round(max(p.visible for p in sent if p.visible) - t_cycle, 2) if lat else None,
            "baseline_consume_s": round(steps["consume"], 2), "baseline_etl_run_s": round(steps["etl"], 2),
            "baseline_materialize_s": round(steps["materialize"], 2), "baseline_materialize_runs": runs,
            "baseline_etl_events_read": summaries["etl"].get("events_read"),
            "baseline_warm_cycle_s": round(sum(warm.values()), 1),
            "baseline_consume_stopped_after_landing": self.consume_stopped,
        }


def _drop_topics(settings: Settings, topics: list[str], groups: list[str], attempts: int = 3) -> list[str]:
    """Delete the benchmark's topics and consumer groups; returns the topics still there
    (the broker away, say), which the figures name so they can be deleted by hand."""
    left = list(topics)
    for attempt in range(attempts):
        try:
            from kafka import KafkaAdminClient

            admin = KafkaAdminClient(**settings.kafka.client_config(), request_timeout_ms=15000)
            try:
                existing = set(admin.list_topics())
                mine = [t for t in left if t in existing]
                if mine:
                    admin.delete_topics(mine)
                try:
                    admin.delete_groups(groups)  # kafka-python 3's name
                except Exception:  # noqa: BLE001 - a group never created (no consume ran)
                    pass
                time.sleep(1)
                existing = set(admin.list_topics())
                left = [t for t in left if t in existing]
            finally:
                admin.close()
        except Exception:  # noqa: BLE001 - best effort: the topics only hold benchmark events
            pass
        if not left:
            break
        time.sleep(5 * (attempt + 1))
    return left


def run(settings: Settings, size: int = DEFAULT_SIZE, repeats: int = 1, rates: Iterable[float] = DEFAULT_RATES,
        duration: float = DEFAULT_DURATION, warmup: float = 10.0, probe_every: float = 0.25, poll_s: float = 0.02,
        users: int = 10_000, merchants: int = 1_000, drain_s: float = 60.0, baseline_probes: int = 4,
        catchup: bool = True, baseline: bool = True, seed: int = 7, **_: Any) -> dict[str, Any]:
    """``size``: the catch-up backlog (events over one simulated day); ``rates`` and
    ``duration``: the steady phases (events/s, measured seconds each, after ``warmup``)."""
    rates = tuple(float(r) for r in rates)
    validate(size, rates, duration, warmup, probe_every)
    load_start = os.getloadavg()
    base = Path(settings.state_dir) / "bench"
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="fresh-", dir=base))
    result: dict[str, Any] = {"benchmark": "freshness"}
    bench = None
    try:
        bench = _Bench(settings, root, size, seed)
        result.update({
            "probe": f"{PROBE_VIEW}:{PROBE_FEATURE} of a new user (0 -> 1)", "probe_view_hop_s": bench.hop_us / 1e6,
            "hops": ", ".join(f"{v.name} {v.hop}" for v in bench.definitions.views),
            "rates": " ".join(f"{r:g}" for r in rates), "duration_s": duration, "warmup_s": warmup,
            "probe_every_s": probe_every, "poll_every_s": poll_s, "users": users, "merchants": merchants,
            "stream_trigger_ms": settings.stream.trigger_ms,
            "stream_max_offsets_per_trigger": settings.stream.max_offsets_per_trigger,
            "stream_idle_publish_ms": settings.stream.idle_publish_ms, "spark_master": settings.spark_master,
            "cpus": CORES, "load_avg_1m_at_start": round(load_start[0], 2), "code": _code_state(CHECKOUT),
        })
        for i, rate in enumerate(rates):
            # A project (topics, Feast project, stream state, server) per rate: a rate the stream
            # cannot sustain leaves a backlog that must not land in the next rate's figures.
            s, cfg = bench.project(f"s{i}")
            srv = bench.server(s, cfg)
            result.update(bench.steady(s, cfg, srv, rate, duration, warmup, probe_every, poll_s, users, merchants,
                                       drain_s, seed + i))
            srv.stop()
        if catchup or baseline:
            c, ccfg = bench.project("c")
            if catchup:
                result.update(bench.catchup(c, ccfg, size, seed, timeout=max(1200.0, size / 100)))
            if baseline:
                result.update(bench.baseline(c, ccfg, baseline_probes, poll_s))
    finally:
        if bench is not None:
            bench.cleanup()
        shutil.rmtree(root, ignore_errors=True)

    result["baseline"] = ("the batch path, one cycle back to back: ingest consume -> etl run -> features "
                          "materialize (each a CLI process), from the probe's send ack to /v1/features showing it")
    first = f"r{rates[0]:g}_"
    if result.get("baseline_latency_p50_s") and result.get(f"{first}latency_p50_s"):
        result["ratio"] = round(result["baseline_latency_p50_s"] / result[f"{first}latency_p50_s"], 1)
        result["ratio_meaning"] = f"baseline p50 / stream p50 at {rates[0]:g} events/s (x fresher)"
        if result.get(f"{first}system_p50_s"):
            result["ratio_system"] = round(result["baseline_latency_p50_s"] / max(result[f"{first}system_p50_s"], 1e-3),
                                           1)
    result["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    result["topics_left"] = " ".join(bench.topics_left) or "-"  # not deleted: delete by hand
    return result


def _code_state(repo_root: Path) -> str:
    try:
        rev = subprocess.run(["git", "-C", str(repo_root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo_root), "status", "--porcelain", "--", "etl", "serving",
                                "feature_repo"], capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev or "unknown") + (" + uncommitted etl/serving edits" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
