"""``skewless demo``: the whole lifecycle built so far, end to end, on simulated data.

Each step is a library call; this module only sequences them and prints what happened.
The live part — the streaming job beside the API, a burst of payments, consistency as
served — is in ``cli.demo_live``.
"""

from __future__ import annotations

import shutil
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Callable

import pandas as pd

import typer
from rich.table import Table

from cli import demo_live, demo_loop
from cli.common import ConfigOpt, JsonOpt, VerboseOpt, console, emit, handle_errors, settings_from
from skewless.settings import Settings

DEMO_SEED = 7


def _step(title: str | None, fn: Callable[[], Any], summary: dict, key: str) -> Any:
    if title:
        console.rule(f"[bold]{title}")
    t0 = time.perf_counter()
    result = fn()
    summary[key] = result
    summary.setdefault("step_seconds", {})[key] = round(time.perf_counter() - t0, 1)
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


def _delete_group(admin, group: str, wait_s: float = 60.0) -> dict:
    """``admin.delete_groups([group])``, retried while the broker has no group coordinator
    yet (a broker that just started creates ``__consumer_offsets`` first: until then every
    group lookup answers COORDINATOR_NOT_AVAILABLE, which is retriable)."""
    from kafka.errors import KafkaError

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return admin.delete_groups([group])
        except KafkaError as exc:
            if not exc.retriable or time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def _fresh(settings: Settings) -> None:
    """Forget earlier demo data: the topics, the consumer group's offsets and the lake."""
    from kafka import KafkaAdminClient

    from skewless.errors import ServiceError
    from skewless.lake_layout import LakeLayout

    admin = KafkaAdminClient(**settings.kafka.client_config())
    try:
        topics = [t for t in settings.topics.by_contract().values() if t in set(admin.list_topics())]
        if topics:
            admin.delete_topics(topics)
        group = settings.kafka.consumer_group
        for outcome in _delete_group(admin, group).values():  # group -> "OK" or the error's name
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
    # The streaming job's state and its Kafka offsets belong to the deleted topics: forgotten,
    # the job rebuilds it from the new topics' earliest offsets (the new topics may already
    # hold more records than the old offsets when it starts, so it could not tell by itself).
    shutil.rmtree(LakeLayout.of(settings).stream_checkpoint, ignore_errors=True)
    if settings.online_store == "redis":
        import redis

        from etl.stream_state import StreamState

        client = demo_live._redis(settings)
        try:
            StreamState(client, settings.feast_project).reset()
        except redis.RedisError as exc:
            raise ServiceError(f"could not forget the streaming job's state in Redis: {exc}",
                               "start Redis with: skewless services up") from exc
        finally:
            client.close()


def run_demo(settings: Settings, events: int, days: int, fresh: bool, burst: int = 5) -> dict[str, Any]:
    from ingestion.consumer import consume
    from ingestion.producer import produce
    from ingestion.verify import verify
    from skewless import services

    from ingestion.simulator import default_start

    summary: dict[str, Any] = {}
    start = default_start(days)
    # The traffic changes part-way (the loop's drift, see cli.demo_loop): from drift_at on.
    drift_at = demo_loop.drift_start(settings, start, days)
    _step("1. services: a real Kafka broker (KRaft) and Redis", lambda: services.up(settings), summary, "services")
    if fresh:
        _fresh(settings)
    if _topic_has_data(settings, settings.topics.transactions):
        console.print("the transactions topic already holds events: not producing again (use --fresh to start over)")
        summary["produce"] = {"skipped": True}
    else:
        drift_note = (f"; from {drift_at:%Y-%m-%d} fraud changes ({demo_loop.DRIFT_KIND})" if drift_at
                      else f" (too few days for the retraining loop: it needs {demo_loop.needed_days(settings)})")
        _step(f"2. produce {events:,} simulated payments ({days} days) with 0.5% malformed messages{drift_note}",
              lambda: produce(settings, events=events, seed=DEMO_SEED, bad_fraction=0.005, start=start, days=days,
                              drift=demo_loop.DRIFT_KIND if drift_at else None, drift_from=drift_at),
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
    # Every valid event landed: what the stream has to apply to have caught up.
    backlog = sum(report["topics"].get(t, {}).get("valid", 0)
                  for t in (settings.topics.transactions, settings.topics.labels))
    if summary["produce"].get("skipped"):  # the traffic of an earlier run: its start from the lake
        start = _first_day(settings) or start
        drift_at = demo_loop.drift_start(settings, start, days)
    _features(settings, summary)
    stream = _stream(settings)
    try:
        _train(settings, summary, drift_at)
        since = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        _serve(settings, summary, stream, backlog, burst)
        summary["step_seconds"]["serve"] = round(time.perf_counter() - t0, 1)
        console.rule("[bold]13. stop the stream: SIGTERM, it ends its micro-batch and reports")
        t0 = time.perf_counter()
        s = summary["stream"] = {**stream.stop(), "caught_up_after_s": stream.caught_up_after}
        summary["step_seconds"]["stream_stop"] = round(time.perf_counter() - t0, 1)
        console.print(f"{s['applied']:,} events applied in {s['batches']:,} micro-batches over {s['seconds']}s "
                      f"(caught up {s['caught_up_after_s']}s after it started, while the model trained); "
                      f"{s['rows_published']:,} rows published to Redis; lag at stop: {s['lag']} records")
    finally:
        stream.kill()
    _step("14. consistency as served: each prediction's features == the offline values at its time",
          lambda: demo_live.served_consistency(settings, since, summary["serve"]["predictions"]), summary,
          "served_consistency")
    if drift_at is not None:
        demo_loop.run_loop(settings, summary, drift_at, start + timedelta(days=days),
                           lambda title, fn, key: _step(title, fn, summary, key))
    else:
        console.print(f"no retraining loop: {days} days of traffic are too few (it needs "
                      f"{demo_loop.needed_days(settings)}: the champion's, the challenger's, the holdout's and "
                      f"the labels' maturity)", highlight=False)
    return summary


def _first_day(settings: Settings) -> datetime | None:
    """Midnight UTC of the first landed transaction (the simulator starts at midnight)."""
    tx = _transactions(settings)
    if tx.empty:
        return None
    first = pd.Timestamp(tx["event_time"].min()).tz_convert("UTC")
    return first.floor("D").to_pydatetime()


def _stream(settings: Settings) -> "demo_live.StreamJob":
    """Start the streaming job once the batch path has loaded and checked the online store
    (a full ``materialize`` clears the store and writes the values as of its start, which
    would undo what the stream wrote meanwhile); it replays the topics from the earliest
    offsets while the model trains."""
    console.rule("[bold]9. stream: `skewless etl stream` (Spark Structured Streaming, Kafka -> Redis)")
    stream = demo_live.StreamJob(settings)
    console.print(f"started (pid {stream.proc.pid}); it replays the topics from the earliest offsets while the "
                  f"model trains, then keeps the online store current; its output: {stream.log_path}")
    return stream


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


def _train(settings: Settings, summary: dict[str, Any], before: datetime | None = None) -> None:
    import logging

    import mlflow  # noqa: F401  (configures its loggers on import: quiet them after)

    from cli.train import results_table
    from skewless.features.store import feature_store
    from training.trainer import train

    # MLflow announces creating and migrating its tracking database at INFO: not ours to print.
    logging.getLogger("mlflow").setLevel(logging.WARNING)

    # With the loop, the champion learns from the days before fraud changed (labels as known now).
    window = f" on the traffic before {before:%Y-%m-%d}" if before else ""
    result = _step(f"10. train{window}: Feast training set -> models -> cost-based evaluation -> MLflow champion",
                   lambda: train(settings, feature_store(settings), end=before,
                                 cutoff=datetime.now(timezone.utc) if before else None, promote_champion=True),
                   summary, "train")
    console.print(results_table(result["results"], result["chosen"]))
    console.print(f"champion: {result['model']} v{result['registered_version']} ({result['chosen']}), "
                  f"training set {result['rows']:,} rows ({result['frauds']} known frauds) in {result['training_set_seconds']}s")


def _transactions(settings: Settings) -> pd.DataFrame:
    from skewless.lake import read_events

    return read_events(settings.lake_path, settings.topics.transactions, "event_time").to_pandas()


def _recent(tx: pd.DataFrame, n: int = 3) -> pd.DataFrame:
    """The last transaction of each of the ``n`` users who paid last."""
    return tx.sort_values("event_time").drop_duplicates("user_id", keep="last").tail(n).sort_values("user_id")


def _showcase(last: pd.DataFrame) -> pd.DataFrame:
    """For each user: a payment like their last one, and one 30 times larger at a merchant
    they never used, both made now (the API uses today's features)."""
    odd = last.assign(amount=last["amount"] * 30, merchant_id="m-never-seen", kind="30x, new merchant")
    return pd.concat([last.assign(kind="like the last one"), odd]).sort_values(["user_id", "amount"])


def _compromised_card(tx: pd.DataFrame, user_id: str, n: int) -> tuple[list[dict[str, Any]], str]:
    """``n`` + 1 payments of ``user_id``'s card as the simulator's fraud bursts make them:
    at merchants the user never paid at, from a foreign country, on a new device, for
    several times the user's usual amount (the event contract's fields, no id or time);
    and what they are, in words."""
    import numpy as np

    from ingestion.simulator import COUNTRIES, CURRENCY
    from skewless.contracts import TRANSACTIONS

    mine = tx[tx["user_id"] == user_id].sort_values("event_time")
    usual = float(mine["amount"].median())
    home = str(mine["country"].mode().iloc[0])
    foreign = next(c for c in reversed(COUNTRIES) if c != home)
    rng = np.random.default_rng(DEMO_SEED)
    columns = ["merchant_id", "mcc"] if "mcc" in tx.columns else ["merchant_id"]
    others = (tx.loc[~tx["merchant_id"].isin(set(mine["merchant_id"])), columns]
              .drop_duplicates("merchant_id").sort_values("merchant_id"))
    picks = others.iloc[rng.choice(len(others), size=n + 1, replace=len(others) < n + 1)]
    device = f"demo-device-{uuid.uuid4().hex[:6]}"
    payments = []
    for (_, m), factor in zip(picks.iterrows(), rng.uniform(2.5, 12, size=n + 1)):
        p = {"user_id": user_id, "merchant_id": m["merchant_id"], "amount": round(usual * float(factor), 2),
             "currency": CURRENCY[foreign], "country": foreign, "channel": "web", "device_id": device}
        p["schema_version"] = TRANSACTIONS.version
        if "mcc" in m and pd.notna(m["mcc"]):
            p["mcc"] = str(m["mcc"])
        payments.append(p)
    what = (f"new merchants, from {foreign} (home: {home}), on a new device, 2.5-12x the user's median "
            f"amount {usual:,.2f}")
    return payments, what


def _serve(settings: Settings, summary: dict[str, Any], stream: "demo_live.StreamJob", backlog: int,
           burst: int) -> None:
    """Start the real API process; once the stream has caught up, score a few transactions,
    then a burst of payments for one user (the API logs every prediction to Kafka)."""
    import httpx

    from skewless.features.definitions import load
    from skewless.services.server_process import ServerProcess, free_port

    console.rule("[bold]11. serve: the champion behind `skewless serve`; every prediction logged to Kafka")
    port = free_port()
    cmd, env = demo_live.child_command(settings, "serve", "--port", str(port))
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    server = ServerProcess("skewless serve", cmd, env, Path.cwd(), settings.state_dir / "demo-serve.log", port)
    rows = []
    try:
        server.wait_ready("/readyz", timeout=90)
        waited = stream.wait_caught_up(backlog)
        console.print(f"the stream has applied all {backlog:,} landed events ({waited}s after it started): the "
                      f"online values are the stream's from here on")
        tx = _transactions(settings)
        # The simulated traffic's users (earlier demo runs' payments left out), and for
        # the burst one whose card no earlier run used, so "before" is their own history.
        simulated = tx[~tx["transaction_id"].str.startswith("demo-")]
        recent = _recent(simulated)
        used = set(tx.loc[tx["transaction_id"].str.startswith("demo-burst-"), "user_id"])
        user = next(u for u in _recent(simulated, 1000).sort_values("event_time", ascending=False)["user_id"]
                    if u not in used)
        table = Table("user_id", "payment", "amount", "score", "decision", "ms")
        with httpx.Client(base_url=server.base) as client:
            for _, t in _showcase(recent).iterrows():
                payment = {k: t[k] for k in demo_live.API_FIELDS}
                payment.update(transaction_id=f"demo-{uuid.uuid4().hex[:8]}-{len(rows)}",
                               amount=round(float(t["amount"]), 2), event_time=datetime.now(timezone.utc).isoformat())
                t0 = time.perf_counter()
                body = client.post("/v1/predict", json=payment).raise_for_status().json()
                ms = (time.perf_counter() - t0) * 1000
                rows.append(body)
                table.add_row(t["user_id"], t["kind"], f"{t['amount']:,.2f}", f"{body['score']:.3f}",
                              "[red]review[/red]" if body["review"] else "approve", f"{ms:.1f}")
        console.print(table)
        summary["serve"] = {"predictions": len(rows), "reviewed": sum(r["review"] for r in rows),
                            "model_version": rows[0]["model_version"] if rows else None}
        view = next(v for v in load(settings).views if v.name == demo_live.BURST_VIEW)
        payments, what = _compromised_card(tx, user, burst)
        console.rule(f"[bold]12. burst: {user}'s card used {burst} times now, sent to Kafka")
        console.print(f"like the simulator's fraud bursts: {what}", highlight=False)
        result = demo_live.burst(settings, server.base, payments[:-1], payments[-1], view.hop_td.total_seconds())
        demo_live.print_burst(result)
        summary["burst"] = {k: v for k, v in result.items() if k not in ("sent", "before", "after")} | {
            "score_before": result["before"]["score"], "score_after": result["after"]["score"],
            # what the two predictions were scored with (the model's inputs), before and after
            "served_before": {f: result["before"]["features"].get(f) for f in demo_live.SHOWN},
            "served_after": {f: result["after"]["features"].get(f) for f in demo_live.SHOWN}}
        summary["serve"]["predictions"] += 2  # the burst's before and after
    finally:
        server.stop()


@handle_errors
def demo(
    events: Annotated[int, typer.Option("--events", "-n", min=100, help="transactions to simulate")] = 50_000,
    days: Annotated[int, typer.Option(min=1, help="days of simulated traffic")] = 30,
    fresh: Annotated[bool, typer.Option("--fresh", help="delete earlier demo topics and lake first")] = False,
    burst: Annotated[int, typer.Option("--burst", min=1, max=50, help="payments in the live burst")] = 5,
    config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Run the whole lifecycle on simulated payments: services, produce, land, verify, ..."""
    settings = settings_from(config)
    summary = run_demo(settings, events=events, days=days, fresh=fresh, burst=burst)
    console.rule("[bold green]demo complete")
    emit(summary, json_out)
