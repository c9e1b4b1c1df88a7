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
    return summary


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
