"""The whole pipeline at scale: how wall time and peak memory grow from N/10 to N events.

    skewless bench scale --events 10000000    # the baseline is the run at N/10 (1,000,000)

For each size, in order, on private resources (fresh topics, consumer group, lake, state,
Feast project and a private ``redis-server`` on a free port, all removed afterwards):

* **produce** — ``ingestion.producer.produce``: N simulated transactions over ``days`` days
  and their chargeback labels to two fresh topics (``simulate_encoded``: serialised chunk
  by chunk, acks=all, idempotent);
* **land** — ``ingestion.consumer.consume`` until every produced message is landed (Parquet,
  fsync, manifests, offset commits);
* **etl** — ``etl.batch.run_batch``: the backfill of every feature view, real Spark on
  ``settings.spark_master`` (the session's start is reported apart, not in the clock);
* **materialize** — ``skewless.features.store.materialize`` (``skewless features
  materialize``) of every view up to the end of the data into the private Redis, in bounded
  memory (``materialize.duckdb_memory``, ``materialize.batch_rows``; ``apply`` of the
  definitions first, outside the clock);
* **training_set** — ``training.trainer.training_set`` through the Feast registry with the
  project's ``training.pit_engine``, for ``training_rows`` entity rows (the same count at
  both sizes: it is the offline tables that grow) drawn from the lake's transactions
  (drawing them is reported apart); then, its baseline, **training_set_unbounded**: the same
  join as it ran before ``training.duckdb_memory`` and the key filter (DuckDB's default
  memory limit, every view row joined), same rows, same result (a digest of each frame).

Each stage runs in a fresh spawned child process: its clock covers the stage's work only
(imports before), its memory is the child's peak RSS (VmHWM) — for the Spark stage plus
the driver JVM's (a child of the Python process: its VmHWM is read before the session
stops). ``growth`` = figure at N / figure at N/10: 10.0 is linear in events, 1.0 flat.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from benchmarks.child import children_peak_rss_mb, in_child, peak_rss_mb
from benchmarks.pit_memory import frame_digest
from skewless.services.redis_server import PrivateRedis
from skewless.settings import Settings

START = datetime(2026, 3, 1, tzinfo=timezone.utc)
STAGES = ("produce", "land", "etl", "materialize", "training_set")


# -- the stages (each runs in its own child; ``say(done, total)`` reports progress) ----------------

def _produce(s: Settings, n: int, days: int, seed: int, say: Callable) -> dict[str, Any]:
    from ingestion.producer import produce

    t0 = time.perf_counter()
    summary = produce(s, n, seed=seed, start=START, days=days, on_progress=say)
    return {"seconds": time.perf_counter() - t0, "messages": summary["produced"],
            "transactions": summary["topics"][s.topics.transactions]["produced"],
            "labels": summary["topics"][s.topics.labels]["produced"]}


def _land(s: Settings, n: int, messages: int, say: Callable) -> dict[str, Any]:
    import pyarrow as pa

    from ingestion.consumer import consume

    pa.array([START], pa.timestamp("us", tz="UTC"))  # warm-up: pyarrow's lazy pandas import
    t0 = time.perf_counter()
    summary = consume(s, topics=[s.topics.transactions, s.topics.labels], max_messages=messages,
                      on_progress=lambda stats: say(sum(t["consumed"] for t in stats.values()), messages))
    seconds = time.perf_counter() - t0
    if summary["valid"] != messages:
        raise RuntimeError(f"landed {summary['valid']:,} valid events of {messages:,}")
    return {"seconds": seconds, "landed": summary["valid"],
            "files": sum(t["files"] for t in summary["topics"].values()),
            "lake_mb": round(_du(Path(s.lake_path) / "raw") / 2**20, 1)}


def _etl(s: Settings, n: int, say: Callable) -> dict[str, Any]:
    from etl.batch import run_batch
    from skewless.features.definitions import load
    from skewless.spark import spark_session

    views = load(s).views
    t0 = time.perf_counter()
    spark_session(s, app="skewless-etl")  # the JVM's start, apart from the job
    startup = time.perf_counter() - t0
    done = [0]

    def on_view(name: str, *_: Any) -> None:
        done[0] += 1
        say(done[0], len(views))

    t0 = time.perf_counter()
    summary = run_batch(s, views=views, on_view=on_view)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "spark_startup_s": round(startup, 2),
            "feature_rows": sum(v["rows"] for v in summary["views"].values()),
            "features_mb": round(_du(Path(s.lake_path) / "features") / 2**20, 1),
            "jvm_peak_rss_mb": children_peak_rss_mb()}


def _materialize(s: Settings, n: int, days: int, say: Callable) -> dict[str, Any]:
    from skewless.features.definitions import load
    from skewless.features.store import apply, feature_store, materialize

    store = feature_store(s)
    apply(s, load(s), store)
    t0 = time.perf_counter()
    summary = materialize(s, end=START + timedelta(days=days), store=store, full=True, on_progress=say)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "entity_keys": sum(summary["keys"].values()), "keys": summary["keys"],
            "offline_rows": sum(summary["rows"].values()), "batch_rows": summary["batch_rows"],
            "duckdb_memory": s.materialize.duckdb_memory}


def _training_set(s: Settings, n: int, rows: int, say: Callable) -> dict[str, Any]:
    from benchmarks.bench_pit import entity_rows
    from skewless.features.store import feature_store
    from training.trainer import training_set

    t0 = time.perf_counter()
    entities = entity_rows(s, rows)
    draw_s = time.perf_counter() - t0
    say(0, 1)
    store = feature_store(s)
    t0 = time.perf_counter()
    frame = training_set(store, s.training.feature_service, entities, s.training.pit_engine, s)
    seconds = time.perf_counter() - t0
    if len(frame) != rows:
        raise RuntimeError(f"{len(frame):,} training rows came back for {rows:,}")
    say(1, 1)
    return {"seconds": seconds, "rows": rows, "engine": s.training.pit_engine, "draw_rows_s": round(draw_s, 2),
            "columns": len(frame.columns), "duckdb_memory": s.training.duckdb_memory, "digest": frame_digest(frame)}


def _training_set_unbounded(s: Settings, n: int, rows: int, say: Callable) -> dict[str, Any]:
    """The ``asof`` training set as it was before it was bounded (the baseline of
    ``training.duckdb_memory`` and the key filter): DuckDB at its default memory limit (80% of
    RAM), every row of every view joined. Same entity rows (same seed), same result (digest)."""
    from benchmarks.bench_pit import entity_rows
    from benchmarks.pit_memory import join_unbounded
    from skewless.features.store import feature_store
    from training.pit_join import apply_on_demand, entity_frame, join_plan

    entities = entity_rows(s, rows)
    say(0, 1)
    store = feature_store(s)
    t0 = time.perf_counter()
    joins, odfvs = join_plan(store, s.training.feature_service)
    frame = apply_on_demand(join_unbounded(entity_frame(entities), joins), odfvs, joins)
    seconds = time.perf_counter() - t0
    say(1, 1)
    return {"seconds": seconds, "rows": len(frame), "columns": len(frame.columns), "digest": frame_digest(frame)}


_FUNCS = {"produce": _produce, "land": _land, "etl": _etl, "materialize": _materialize, "training_set": _training_set,
          "training_set_unbounded": _training_set_unbounded}


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def _child(stage: str, settings: Settings, args: tuple, out: Any) -> None:
    # Libraries' own progress bars (Feast's tqdm) would land on stdout, whose last line is the
    # benchmark's JSON: the child's stdout goes nowhere.
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    last = [0.0]

    def say(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5 or (total and done >= total):
            last[0] = now
            out.put(("progress", done, total))

    try:
        load0 = os.getloadavg()[0]
        result = _FUNCS[stage](settings, *args, say)
        result["peak_rss_mb"] = peak_rss_mb()
        result["load_1m"] = round((load0 + os.getloadavg()[0]) / 2, 1)
        out.put(("result", result))
    except BaseException as exc:  # noqa: BLE001 - carried to the parent as one line
        out.put(("error", f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]))


def _in_child(stage: str, settings: Settings, args: tuple, on_stage: Callable, label: str,
              timeout_s: float = 4 * 3600) -> dict[str, Any]:
    """The stage in a spawned child, relaying its progress; its result, or a RuntimeError."""

    def relay(msg: tuple) -> bool:
        if msg[0] != "progress":
            return False
        on_stage(label, msg[1], msg[2])
        return True

    try:
        kind, value = in_child(_child, stage, settings, args, timeout_s=timeout_s, on_message=relay,
                               name=f"stage {stage}")
    except TimeoutError as exc:
        raise RuntimeError(str(exc)) from None
    if kind == "error":
        raise RuntimeError(f"stage {stage}: {value}")
    return value


# -- resources -------------------------------------------------------------------------------------

def _private(settings: Settings, root: Path, redis_port: int) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return settings.model_copy(update={
        "lake_path": str(root / "lake"), "state_dir": root / "state",
        "topics": settings.topics.model_copy(update={"transactions": f"scale-{tag}-transactions",
                                                     "labels": f"scale-{tag}-labels"}),
        "kafka": settings.kafka.model_copy(update={"consumer_group": f"scale-{tag}"}),
        "redis_url": f"redis://127.0.0.1:{redis_port}/0", "redis_password": None, "online_store": "redis",
        "feast_project": f"scale{tag}",
    })


def _delete_topics(settings: Settings, topics: list[str]) -> None:
    from kafka import KafkaAdminClient

    try:
        admin = KafkaAdminClient(**settings.kafka.client_config())
    except Exception as exc:  # noqa: BLE001 - best effort cleanup: never hide the stage's own error
        print(f"bench scale: could not delete topics {topics}: {exc}", file=sys.stderr)
        return
    try:
        admin.delete_topics(topics)
    except Exception:  # noqa: BLE001 - best effort cleanup
        pass
    finally:
        admin.close()


def _log(n: int, stage: str, figures: dict[str, Any]) -> None:
    """One line per finished stage on stderr: a run that dies later keeps what it measured."""
    print(f"bench scale: {n:,} events, {stage}: " + json.dumps(figures, default=str), file=sys.stderr, flush=True)


def _pipeline(settings: Settings, n: int, days: int, seed: int, training_rows: int, on_stage: Callable,
              base: Path) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"scale-{n}-", dir=base))
    redis_server = PrivateRedis(root / "redis")
    s = _private(settings, root, redis_server.port)
    figures: dict[str, Any] = {"events": n}
    short = f"{n:,}"
    try:
        figures["produce"] = _in_child("produce", s, (n, days, seed), on_stage, f"{short}: produce")
        _log(n, "produce", figures["produce"])
        messages = figures["produce"]["messages"]
        figures["land"] = _in_child("land", s, (n, messages), on_stage, f"{short}: land")
        _log(n, "land", figures["land"])
        figures["etl"] = _in_child("etl", s, (n,), on_stage, f"{short}: etl (views)")
        _log(n, "etl", figures["etl"])
        figures["materialize"] = _in_child("materialize", s, (n, days), on_stage, f"{short}: materialize")
        figures["materialize"]["redis_used_memory_mb"] = redis_server.used_memory_mb()
        _log(n, "materialize", figures["materialize"])
        figures["training_set"] = _in_child("training_set", s, (n, training_rows), on_stage,
                                            f"{short}: training set")
        _log(n, "training_set", figures["training_set"])
        figures["training_set_unbounded"] = _in_child("training_set_unbounded", s, (n, training_rows), on_stage,
                                                      f"{short}: training set, unbounded")
        _log(n, "training_set_unbounded", figures["training_set_unbounded"])
    finally:
        redis_server.stop()
        _delete_topics(settings, [s.topics.transactions, s.topics.labels])
        shutil.rmtree(root, ignore_errors=True)
    return figures


def _total_rss(stage: dict[str, Any]) -> float:
    return (stage.get("peak_rss_mb") or 0) + (stage.get("jvm_peak_rss_mb") or 0)


def check_args(size: int | None = None, **_: Any) -> None:
    from skewless.errors import ConfigError

    if size is not None and size < 20_000:
        raise ConfigError("bench scale needs --events >= 20,000 (its baseline is a tenth of it)")


def run(settings: Settings, size: int = 1_000_000, days: int = 30, seed: int = 7, training_rows: int = 1_000_000,
        on_stage: Callable[[str, int, int | None], None] | None = None, **_: Any) -> dict[str, Any]:
    on_stage = on_stage or (lambda *a: None)
    small = size // 10
    base = Path(settings.state_dir) / "bench"
    base.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    baseline = _pipeline(settings, small, days, seed, training_rows, on_stage, base)
    big = _pipeline(settings, size, days, seed, training_rows, on_stage, base)
    result: dict[str, Any] = {
        "benchmark": "scale", "events": size, "baseline": f"the same pipeline at {small:,} events",
        "baseline_events": small, "days": days, "training_rows": training_rows,
        "pit_engine": settings.training.pit_engine, "spark_master": settings.spark_master,
        "partitions": settings.kafka.partitions, "cpus": os.cpu_count(),
        "load_avg_at_start": [round(x, 1) for x in load0], "load_avg_at_end": [round(x, 1) for x in os.getloadavg()],
        "total_s": round(time.perf_counter() - t0, 1),
    }
    for stage in STAGES:
        b, g = baseline[stage], big[stage]
        result[f"{stage}_baseline_s"] = round(b["seconds"], 2)
        result[f"{stage}_s"] = round(g["seconds"], 2)
        result[f"{stage}_time_growth"] = round(g["seconds"] / b["seconds"], 2)
        result[f"{stage}_baseline_peak_rss_mb"] = round(_total_rss(b))
        result[f"{stage}_peak_rss_mb"] = round(_total_rss(g))
        result[f"{stage}_memory_growth"] = round(_total_rss(g) / _total_rss(b), 2)
        result[f"{stage}_load_1m"] = [b["load_1m"], g["load_1m"]]
        if stage == "etl":
            for k in ("peak_rss_mb", "jvm_peak_rss_mb"):
                result[f"etl_python_{k}" if k == "peak_rss_mb" else f"etl_{k}"] = [
                    round(x[k]) if x.get(k) else None for x in (b, g)]
            result["etl_spark_startup_s"] = [b["spark_startup_s"], g["spark_startup_s"]]
    result["events_per_s"] = {st: round(size / big[st]["seconds"]) for st in ("produce", "land", "etl")}
    result["baseline_events_per_s"] = {st: round(small / baseline[st]["seconds"]) for st in ("produce", "land", "etl")}
    result["messages"] = [baseline["produce"]["messages"], big["produce"]["messages"]]
    result["lake_raw_mb"] = [baseline["land"]["lake_mb"], big["land"]["lake_mb"]]
    result["lake_files"] = [baseline["land"]["files"], big["land"]["files"]]
    result["feature_rows"] = [baseline["etl"]["feature_rows"], big["etl"]["feature_rows"]]
    result["features_mb"] = [baseline["etl"]["features_mb"], big["etl"]["features_mb"]]
    result["entity_keys"] = [baseline["materialize"]["entity_keys"], big["materialize"]["entity_keys"]]
    result["redis_used_memory_mb"] = [baseline["materialize"]["redis_used_memory_mb"],
                                      big["materialize"]["redis_used_memory_mb"]]
    for size_name, fig in (("baseline", baseline), ("events", big)):
        bounded, unbounded = fig["training_set"], fig["training_set_unbounded"]
        result[f"training_set_vs_unbounded_{size_name}"] = {
            "bounded_s": round(bounded["seconds"], 2), "unbounded_s": round(unbounded["seconds"], 2),
            "bounded_peak_rss_mb": round(bounded["peak_rss_mb"]), "unbounded_peak_rss_mb": round(unbounded["peak_rss_mb"]),
            "memory_ratio": round(unbounded["peak_rss_mb"] / bounded["peak_rss_mb"], 2),
            "same_result": bounded["digest"] == unbounded["digest"], "load_1m": [bounded["load_1m"], unbounded["load_1m"]]}
    result["training_draw_rows_s"] = [baseline["training_set"]["draw_rows_s"], big["training_set"]["draw_rows_s"]]
    return result


def table(result: dict[str, Any]):
    from rich.table import Table

    small, big = result["baseline_events"], result["events"]
    t = Table("stage", f"{small:,}: s", f"{big:,}: s", "time growth", f"{small:,}: peak MB", f"{big:,}: peak MB",
              "memory growth", title=f"bench scale: {small:,} -> {big:,} events (10.0 = linear)")
    for stage in STAGES:
        t.add_row(stage, f"{result[f'{stage}_baseline_s']:,}", f"{result[f'{stage}_s']:,}",
                  f"{result[f'{stage}_time_growth']}", f"{result[f'{stage}_baseline_peak_rss_mb']:,}",
                  f"{result[f'{stage}_peak_rss_mb']:,}", f"{result[f'{stage}_memory_growth']}")
    return t
