"""``skewless demo``: the whole lifecycle built so far, end to end, on simulated data.

Each step is a library call; this module only sequences them and prints what happened.
"""

from __future__ import annotations

import pandas as pd

import shutil
from typing import Annotated, Any, Callable

import typer
from rich.table import Table

from cli.common import ConfigOpt, JsonOpt, VerboseOpt, console, emit, handle_errors, settings_from
from skewless.settings import Settings

DEMO_SEED = 7


def _step(title: str, fn: Callable[[], Any], summary: dict, key: str) -> Any:
    console.rule(f"[bold]{title}")
    result = fn()
    summary[key] = result
    return result


def _topic_has_data(settings: Settings, topic: str) -> bool:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(**settings.kafka.client_config(), enable_auto_commit=False)
    try:
        parts = c.partitions_for_topic(topic) or set()
        ends = c.end_offsets([TopicPartition(topic, p) for p in parts]) if parts else {}
        return any(v > 0 for v in ends.values())
    finally:
        c.close()


def _fresh(settings: Settings) -> None:
    """Forget earlier demo data: the topics, the consumer group's offsets and the lake."""
    from kafka import KafkaAdminClient

    import time

    from skewless.errors import ServiceError

    admin = KafkaAdminClient(**settings.kafka.client_config())
    try:
        topics = [t for t in settings.topics.by_contract().values() if t in set(admin.list_topics())]
        if topics:
            admin.delete_topics(topics)
        group = settings.kafka.consumer_group
        for outcome in admin.delete_groups([group]).values():  # group -> "OK" or the error's name
            if outcome not in ("OK", "GroupIdNotFoundError"):  # not found: no run consumed yet
                raise ServiceError(f"could not delete the consumer group {group!r}: {outcome}",
                                   "stop every `skewless ingest consume` of this group, then run the demo again")
        # Topic deletion is asynchronous in Kafka: wait until the broker no longer lists them.
        deadline = time.monotonic() + 60
        while (left := set(topics) & set(admin.list_topics())) and time.monotonic() < deadline:
            time.sleep(0.2)
        if left:
            raise ServiceError(f"Kafka had not deleted the topics {sorted(left)} after 60 s")
    finally:
        admin.close()
    shutil.rmtree(settings.lake_path, ignore_errors=True)


def run_demo(settings: Settings, events: int, days: int, fresh: bool) -> dict[str, Any]:
    from ingestion.consumer import consume
    from ingestion.producer import produce
    from ingestion.verify import verify
    from skewless import services

    summary: dict[str, Any] = {}
    _step("1. services: a real Kafka broker (KRaft) and Redis", lambda: services.up(settings), summary, "services")
    if fresh:
        _fresh(settings)
    if _topic_has_data(settings, settings.topics.transactions):
        console.print("the transactions topic already holds events: not producing again (use --fresh to start over)")
        summary["produce"] = {"skipped": True}
    else:
        _step(f"2. produce {events:,} simulated payments ({days} days) with 0.5% malformed messages",
              lambda: produce(settings, events=events, seed=DEMO_SEED, bad_fraction=0.005, days=days),
              summary, "produce")
        console.print({t: c for t, c in summary["produce"]["topics"].items()})
    landed = _step("3. consume: Kafka -> Parquet lake, exactly once, bad events dead-lettered",
                   lambda: consume(settings, until_idle=3.0), summary, "consume")
    console.print(f"landed {landed['valid']:,} valid events, dead-lettered {landed['dead_lettered']:,} "
                  f"at {landed['events_per_s']:,} events/s -> {settings.lake_path}")
    report = _step("4. verify: every offset accounted for", lambda: verify(settings), summary, "verify")
    table = Table("topic", "valid", "dead-lettered", "duplicates", "gaps")
    for topic, t in report["topics"].items():
        table.add_row(topic, f"{t['valid']:,}", f"{t['dead_lettered']:,}", str(t["duplicates"]), str(t["gaps"]))
    console.print(table)
    if not report["ok"]:
        from skewless.errors import DataError

        raise DataError("the lake audit found duplicates or gaps; see `skewless ingest verify`")
    summary["verify"] = {"ok": report["ok"], **{t: {k: v for k, v in r.items() if k != "partitions"}
                                                for t, r in report["topics"].items()}}
    _features(settings, summary)
    _train(settings, summary)
    _serve(settings, summary)
    return summary


def _features(settings: Settings, summary: dict[str, Any]) -> None:
    from etl.batch import run_batch
    from monitoring.consistency import check, sample_entities
    from skewless.features import store as feast_store
    from skewless.features.definitions import load

    definitions = load(settings)
    etl = _step("5. etl: Spark computes every feature view from the lake (incremental)",
                lambda: run_batch(settings, views=definitions.views), summary, "etl")
    for name, v in etl.get("views", {}).items():
        console.print(f"  {name}: {v['rows']:,} rows")
    store = feast_store.feature_store(settings)
    _step("6. features apply: register the DSL's objects in Feast", lambda: feast_store.apply(settings, definitions, store),
          summary, "apply")
    _step("7. features materialize: offline tables -> Redis", lambda: feast_store.materialize(settings, store=store, full=True),
          summary, "materialize")
    sample = sample_entities(settings, 3, seed=DEMO_SEED)
    table = Table("user_id", "merchant_id", "tx 1h", "tx 24h", "mean amount 7d", "merchants 24h", "merchant tx 24h")
    for user_id, merchant_id in zip(sample.user_id, sample.merchant_id):
        v = feast_store.get_online(settings, definitions, {"user_id": user_id, "merchant_id": merchant_id}, store=store)
        table.add_row(user_id, merchant_id, str(v["user_spend__count_1h"]), str(v["user_spend__count_24h"]),
                      f"{v['user_spend__mean_amount_7d'] or 0:.2f}", str(v["user_diversity__distinct_merchants_24h"]),
                      str(v["merchant_activity__count_24h"]))
    console.print(table)
    report = _step("8. consistency: online values == offline point-in-time values",
                   lambda: check(settings, store, sample_entities(settings, 300)), summary, "consistency")
    console.print(f"{report['mismatches']} mismatches in {report['values_compared']:,} values "
                  f"({report['entities']} entities x {report['features']} features)")


def _train(settings: Settings, summary: dict[str, Any]) -> None:
    from cli.train import results_table
    from skewless.features.store import feature_store
    from training.trainer import train

    result = _step("9. train: Feast training set -> models -> cost-based evaluation -> MLflow champion",
                   lambda: train(settings, feature_store(settings), promote_champion=True), summary, "train")
    console.print(results_table(result["results"], result["chosen"]))
    console.print(f"champion: {result['model']} v{result['registered_version']} ({result['chosen']}), "
                  f"training set {result['rows']:,} rows ({result['frauds']} known frauds) in {result['training_set_seconds']}s")


def _showcase(settings: Settings, n: int = 3):
    """For a few recent users: a payment like their last one, and one 30 times larger at
    a merchant they never used, both made now (the API uses today's features)."""
    from skewless.lake import read_events

    tx = read_events(settings.lake_path, settings.topics.transactions, "event_time").to_pandas()
    last = tx.sort_values("event_time").drop_duplicates("user_id", keep="last").tail(n)
    odd = last.assign(amount=last["amount"] * 30, merchant_id="m-never-seen", kind="30x, new merchant")
    return pd.concat([last.assign(kind="like the last one"), odd]).sort_values(["user_id", "amount"])


def _serve(settings: Settings, summary: dict[str, Any]) -> None:
    """Start the real API process, score a few transactions, land its prediction log."""
    import os
    import sys
    import time
    from datetime import datetime, timezone
    from pathlib import Path

    import httpx

    from ingestion.consumer import consume
    from skewless.services.server_process import ServerProcess, free_port

    console.rule("[bold]10. serve: the champion behind `skewless serve`; every prediction logged to Kafka")
    port = free_port()
    cmd = [sys.executable, "-m", "cli", "serve", "--port", str(port)]
    if settings.config_file:
        cmd += ["--config", str(settings.config_file)]
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    server = ServerProcess("skewless serve", cmd, dict(os.environ), Path.cwd(), settings.state_dir / "demo-serve.log",
                           port)
    rows = []
    try:
        server.wait_ready("/readyz", timeout=90)
        now = datetime.now(timezone.utc).isoformat()
        table = Table("user_id", "payment", "amount", "score", "decision", "ms")
        with httpx.Client(base_url=server.base) as client:
            for _, t in _showcase(settings).iterrows():
                tx = {k: t[k] for k in ("user_id", "merchant_id", "currency", "country", "channel", "device_id")}
                tx.update(transaction_id=f"demo-{len(rows)}", amount=round(float(t["amount"]), 2), event_time=now)
                t0 = time.perf_counter()
                body = client.post("/v1/predict", json=tx).raise_for_status().json()
                ms = (time.perf_counter() - t0) * 1000
                rows.append(body)
                table.add_row(t["user_id"], t["kind"], f"{t['amount']:,.2f}", f"{body['score']:.3f}",
                              "[red]review[/red]" if body["review"] else "approve", f"{ms:.1f}")
        console.print(table)
    finally:
        server.stop()
    landed = consume(settings, until_idle=3.0, topics=[settings.topics.predictions])
    console.print(f"{len(rows)} predictions answered; the consumer landed {landed['valid']} prediction records "
                  f"in the lake ({settings.topics.predictions})")
    summary["serve"] = {"predictions": len(rows), "reviewed": sum(r["review"] for r in rows),
                        "logged_and_landed": landed["valid"], "model_version": rows[0]["model_version"] if rows else None}


@handle_errors
def demo(
    events: Annotated[int, typer.Option("--events", "-n", min=100, help="transactions to simulate")] = 50_000,
    days: Annotated[int, typer.Option(min=1, help="days of simulated traffic")] = 30,
    fresh: Annotated[bool, typer.Option("--fresh", help="delete earlier demo topics and lake first")] = False,
    config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Run the whole lifecycle on simulated payments: services, produce, land, verify, ..."""
    settings = settings_from(config)
    summary = run_demo(settings, events=events, days=days, fresh=fresh)
    console.rule("[bold green]demo complete")
    emit(summary, json_out)
