"""``skewless demo``: the whole lifecycle built so far, end to end, on simulated data.

Each step is a library call; this module only sequences them and prints what happened.
"""

from __future__ import annotations

import shutil
from typing import Annotated, Any, Callable

import typer
from rich.table import Table

from skewless.cli.common import ConfigOpt, JsonOpt, VerboseOpt, console, emit, handle_errors, settings_from
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

    admin = KafkaAdminClient(**settings.kafka.client_config())
    try:
        topics = [t for t in settings.topics.by_contract().values() if t in set(admin.list_topics())]
        if topics:
            admin.delete_topics(topics)
        try:
            admin.delete_consumer_groups([settings.kafka.consumer_group])
        except Exception:  # noqa: BLE001 - the group may not exist yet
            pass
    finally:
        admin.close()
    shutil.rmtree(settings.lake_path, ignore_errors=True)
    import time

    time.sleep(2)  # topic deletion is asynchronous in Kafka


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
    return summary


def _features(settings: Settings, summary: dict[str, Any]) -> None:
    from etl.batch import run_batch
    from monitoring.consistency import check, sample_entities
    from skewless.features import store as feast_store

    etl = _step("5. etl: Spark computes every feature view from the lake (incremental)",
                lambda: run_batch(settings), summary, "etl")
    for name, v in etl.get("views", {}).items():
        console.print(f"  {name}: {v['rows']:,} rows")
    store = feast_store.feature_store(settings)
    _step("6. features apply: register the DSL's objects in Feast", lambda: feast_store.apply(settings, store),
          summary, "apply")
    _step("7. features materialize: offline tables -> Redis", lambda: feast_store.materialize(settings, store=store, full=True),
          summary, "materialize")
    sample = sample_entities(settings, 3, seed=DEMO_SEED)
    table = Table("user_id", "merchant_id", "tx 1h", "tx 24h", "mean amount 7d", "merchants 24h", "merchant tx 24h")
    for user_id, merchant_id in zip(sample.user_id, sample.merchant_id):
        v = feast_store.get_online(settings, {"user_id": user_id, "merchant_id": merchant_id}, store=store)
        table.add_row(user_id, merchant_id, str(v["user_spend__count_1h"]), str(v["user_spend__count_24h"]),
                      f"{v['user_spend__mean_amount_7d'] or 0:.2f}", str(v["user_diversity__distinct_merchants_24h"]),
                      str(v["merchant_activity__count_24h"]))
    console.print(table)
    report = _step("8. consistency: online values == offline point-in-time values",
                   lambda: check(settings, store, sample_entities(settings, 300)), summary, "consistency")
    console.print(f"{report['mismatches']} mismatches in {report['values_compared']:,} values "
                  f"({report['entities']} entities x {report['features']} features)")


def _train(settings: Settings, summary: dict[str, Any]) -> None:
    from skewless.cli.train import results_table
    from skewless.features.store import feature_store
    from training.trainer import train

    result = _step("9. train: Feast training set -> models -> cost-based evaluation -> MLflow champion",
                   lambda: train(settings, feature_store(settings), promote_champion=True), summary, "train")
    console.print(results_table(result["results"]))
    console.print(f"champion: {result['model']} v{result['registered_version']} ({result['chosen']}), "
                  f"training set {result['rows']:,} rows ({result['frauds']} known frauds) in {result['training_set_seconds']}s")


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
