"""The live part of ``skewless demo``: the streaming job running beside the API, a burst of
payments moving one user's velocity features and score, and consistency as served.

The stream is its own process (``skewless etl stream --json``: its own Spark JVM and
session, with Spark's Kafka source), started once the batch path has loaded and checked
the online store, and stopped with SIGTERM, on which it stops gracefully and prints its
JSON summary. Its output goes to a log file: what the demo prints is the demo's own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.table import Table

from cli.common import console, progress
from skewless.errors import ServiceError
from skewless.settings import Settings

# What the burst moves and shows: the fraud velocity view's 1h count.
BURST_VIEW, BURST_FEATURE = "user_spend", "count_1h"
# A transaction the API scores: the event contract's fields (no schema_version or mcc).
API_FIELDS = ("user_id", "merchant_id", "amount", "currency", "country", "channel", "device_id")
SECRET_ENV = ("SKEWLESS_KAFKA__SASL_PASSWORD", "SKEWLESS_REDIS_PASSWORD", "SKEWLESS_SERVING__API_KEY")


def child_command(settings: Settings, *args: str) -> tuple[list[str], dict[str, str]]:
    """``python -m cli *args`` with the demo's exact settings, and its environment.

    With a settings file the child reads it (the environment overrides it there as it did
    here). Settings made in code (tests, library use) are written to the state dir (0600)
    for the child, and only the secrets, which the file leaves out, come from the
    environment: another ``SKEWLESS_*`` variable would override the file's resolved value."""
    cmd = [sys.executable, "-m", "cli", *args]
    if settings.config_file:
        return cmd + ["--config", str(settings.config_file)], dict(os.environ)
    import yaml

    data = settings.model_dump(mode="json", exclude={"config_file"})
    data["kafka"].pop("sasl_password", None)
    data.pop("redis_password", None)
    data["serving"].pop("api_key", None)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    path = settings.state_dir / "demo-settings.yaml"
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SKEWLESS_") or k.upper() in SECRET_ENV}
    return cmd + ["--config", str(path)], env


def _redis(settings: Settings):
    import redis

    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    return redis.Redis.from_url(settings.redis_url, password=password, socket_timeout=10)


def _published_at(settings: Settings) -> float:
    """The stream's clock at its last publication of due rows (0 before its first)."""
    from skewless.features import stream_status

    client = _redis(settings)
    try:
        status = stream_status.read(client, settings.feast_project)
    finally:
        client.close()
    return (status.published_at or 0.0) if status else 0.0


class StreamJob:
    """``skewless etl stream --json`` as a child process of the demo."""

    def __init__(self, settings: Settings):
        self.settings = settings
        cmd, env = child_command(settings, "etl", "stream", "--json")
        logs = settings.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path, self.out_path = logs / "demo-stream.log", logs / "demo-stream.json"
        self.started = time.time()
        with open(self.log_path, "wb") as log, open(self.out_path, "wb") as out:
            # Its own session: a Ctrl-C at the terminal reaches the demo, which stops it.
            self.proc = subprocess.Popen(cmd, env={**env, "PYTHONUNBUFFERED": "1"}, cwd=Path.cwd(), stdout=out,
                                         stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        self.caught_up_after: float | None = None

    def _log_tail(self) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise ServiceError(f"the streaming job exited with code {self.proc.returncode}: {self._log_tail()}",
                               f"its output is in {self.log_path}")

    def wait_caught_up(self, events: int, timeout: float = 900.0) -> float:
        """Until the stream has applied ``events`` events (every one landed in the lake)
        in this run; returns the seconds since it started. Its status is the hash it keeps
        in Redis beside the values (``skewless.features.stream_status``)."""
        from skewless.features import stream_status

        client = _redis(self.settings)
        deadline = time.monotonic() + timeout
        status = None
        try:
            with progress() as bar:
                task = bar.add_task("stream: events applied", total=events)
                while True:
                    self._check_alive()
                    status = stream_status.read(client, self.settings.feast_project)
                    # published_at is this run's clock once its loop runs: an older status
                    # (the previous run's, before this one rebuilt its state) is not counted.
                    if status is not None and (status.published_at or 0) >= self.started:
                        bar.update(task, completed=min(status.events, events))
                        if status.events >= events:
                            break
                    if time.monotonic() > deadline:
                        applied = status.events if status else 0
                        raise ServiceError(f"the streaming job had applied {applied:,} of {events:,} events after "
                                           f"{timeout:.0f}s", f"its output is in {self.log_path}")
                    time.sleep(0.5)
        finally:
            client.close()
        self.caught_up_after = round(time.time() - self.started, 1)
        return self.caught_up_after

    def stop(self, timeout: float = 120.0) -> dict[str, Any]:
        """SIGTERM (the job stops its query and prints its summary); SIGKILL after
        ``timeout``. Returns the job's JSON summary."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
                raise ServiceError(f"the streaming job did not stop within {timeout:.0f}s of SIGTERM (killed)",
                                   f"its output is in {self.log_path}") from None
        try:  # Spark's JVM, should the job have left it behind
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        lines = [ln for ln in self.out_path.read_text(errors="replace").splitlines() if ln.strip()]
        if self.proc.returncode != 0 or not lines:
            raise ServiceError(f"the streaming job exited with code {self.proc.returncode}: {self._log_tail()}",
                               f"its output is in {self.log_path}")
        return json.loads(lines[-1])

    def kill(self) -> None:
        """Stop it now, whatever it was doing (the demo failed elsewhere)."""
        from skewless.services.server_process import stop_group

        stop_group(self.proc, grace_s=60)


def _iso(t: float) -> str:
    """Unix seconds -> the simulator's event-time text (``...T12:34:56.123456Z``)."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _clock(t: float | None) -> str:
    if t is None:
        return "-"
    text = datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%S.%f")[:-3]
    return text[:-4] if text.endswith(".000") else text


def burst(settings: Settings, base_url: str, payments: list[dict[str, Any]], probe: dict[str, Any], hop_s: float,
          wait_s: float = 30.0) -> dict[str, Any]:
    """Send ``payments`` (one user's; the event contract's fields but id and time) to
    Kafka, each made now (unique transaction ids, one every ``min(hop, 1 s)``), while
    polling the API's ``/v1/features`` for the user's 1h count; score ``probe`` (one more
    such payment) before the burst and after it.

    An event counts from its hop boundary (the value at ``t`` covers ``[b - w, b)``, ``b``
    = ``t``'s boundary), so each is expected by its next boundary plus the stream's
    micro-batch; polling stops ``wait_s`` after the last one's boundary."""
    import httpx
    import orjson

    from ingestion.producer import make_producer
    from skewless.contracts import TRANSACTIONS

    user = str(payments[0]["user_id"])
    n = len(payments)
    topic = settings.topics.transactions
    tag = uuid.uuid4().hex[:8]
    ref = f"{BURST_VIEW}:{BURST_FEATURE}"
    gap = min(hop_s, 1.0)

    def count(client: httpx.Client) -> int:
        body = client.post("/v1/features", json={"features": [ref], "entities": [{"user_id": user}]})
        value = body.raise_for_status().json()["results"][0]["values"][0]
        return int(value or 0)  # an entity the view never saw reads as no value: a count of 0

    def score(client: httpx.Client, label: str) -> dict[str, Any]:
        tx = {k: probe[k] for k in API_FIELDS}
        tx.update(transaction_id=f"demo-burst-{tag}-{label}", event_time=_iso(time.time()))
        body = client.post("/v1/predict", params={"include_features": "true"}, json=tx).raise_for_status().json()
        return {"request_id": body["request_id"], "score": body["score"], "review": body["review"],
                "features": body["features"], "event_time": tx["event_time"]}

    sent: list[dict[str, Any]] = []
    with httpx.Client(base_url=base_url, timeout=10) as client:
        before_pred = score(client, "before")
        before = count(client)
        producer = make_producer(settings)
        next_send, last = time.time(), before
        try:
            while True:
                now = time.time()
                if len(sent) < n and now >= next_send:
                    tx = {**payments[len(sent)], "transaction_id": f"demo-burst-{tag}-{len(sent)}",
                          "event_time": _iso(now)}
                    TRANSACTIONS.validate(tx)  # what the topic's consumers would accept, or an error now
                    producer.send(topic, key=user.encode(), value=orjson.dumps(tx))
                    producer.flush(timeout=30)
                    boundary = (now // hop_s + 1) * hop_s  # the first instant whose value counts it
                    sent.append({"transaction_id": tx["transaction_id"], "merchant_id": tx["merchant_id"],
                                 "amount": tx["amount"], "event_time": now, "acked": time.time(),
                                 "visible_from": boundary, "seen": None, "count": None})
                    next_send = now + gap
                last = count(client)
                seen_at = time.time()
                for s in sent[: max(0, last - before)]:
                    if s["seen"] is None:
                        s.update(seen=seen_at, count=last)
                if len(sent) == n and (all(s["seen"] for s in sent) or seen_at > sent[-1]["visible_from"] + wait_s):
                    break
                time.sleep(0.02)
        finally:
            producer.close(timeout=30)
        # The count is one view; the others changed at the same boundary (the user's last
        # transaction time, ...) are written in the same publication, which ends by
        # recording its instant: score once that instant has passed the last boundary.
        deadline = time.monotonic() + wait_s
        while _published_at(settings) < sent[-1]["visible_from"] and time.monotonic() < deadline:
            time.sleep(0.02)
        after_pred = score(client, "after")
    return {"user_id": user, "view": BURST_VIEW, "feature": BURST_FEATURE, "hop_s": hop_s, "transactions": n,
            "count_before": before, "count_after": last, "moved_by": last - before,
            "seen": sum(s["seen"] is not None for s in sent),
            "seen_after_s": [None if s["seen"] is None else round(s["seen"] - s["event_time"], 3) for s in sent],
            "sent": sent, "probe_amount": probe["amount"], "before": before_pred, "after": after_pred}


# Features of the scored payment shown before and after the burst (model input names).
SHOWN = {f"{BURST_VIEW}__count_1h": "payments 1h", f"{BURST_VIEW}__sum_amount_1h": "amount 1h",
         "user_diversity__distinct_merchants_24h": "merchants 24h", "user_diversity__distinct_devices_24h": "devices 24h",
         "request_features__seconds_since_last_tx": "s since last payment"}


def print_burst(result: dict[str, Any]) -> None:
    hop = result["hop_s"]
    table = Table("#", "amount", "sent (event time)", "counts from", "seen online", "after", result["feature"])
    for i, s in enumerate(result["sent"], 1):
        after = "not seen" if s["seen"] is None else f"{s['seen'] - s['event_time']:.2f}s"
        table.add_row(str(i), f"{s['amount']:,.2f}", _clock(s["event_time"]), _clock(s["visible_from"]),
                      _clock(s["seen"]), after, "-" if s["count"] is None else str(s["count"]))
    console.print(table)
    console.print(f"{result['view']} has a {hop:g}s hop: an event counts from the next hop boundary ('counts from'), "
                  f"then the stream's micro-batch writes it to Redis; 'seen online': when POST /v1/features first "
                  f"returned it. {result['feature']} of {result['user_id']}: {result['count_before']} -> "
                  f"{result['count_after']}", highlight=False)
    b, a = result["before"], result["after"]
    table = Table(f"one more such payment ({result['probe_amount']:,.2f})", "before the burst", "after")
    for f, label in SHOWN.items():
        if f in b["features"]:
            table.add_row(label, _num(b["features"][f]), _num(a["features"][f]))
    table.add_row("score (POST /v1/predict)", f"{b['score']:.4f}", f"{a['score']:.4f}")
    table.add_row("decision", "review" if b["review"] else "approve", "review" if a["review"] else "approve")
    console.print(table)


def _num(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.2f}"


def served_consistency(settings: Settings, since: datetime, predictions: int) -> dict[str, Any]:
    """Land what the demo made live (the burst's transactions, the API's prediction log),
    let the batch job catch up (incremental), and compare every prediction made since
    ``since`` with the offline point-in-time values at its transaction's time."""
    from etl.batch import run_batch
    from ingestion.consumer import consume
    from monitoring.served_consistency import check_served
    from skewless.features.definitions import load

    definitions = load(settings)
    landed = consume(settings, until_idle=3.0)
    per_topic = {t: c.get("valid", 0) for t, c in landed.get("topics", {}).items()}
    topics = settings.topics
    console.print(f"landed {per_topic.get(topics.transactions, 0):,} transactions (the burst's among them) and "
                  f"{per_topic.get(topics.predictions, 0):,} prediction records ({predictions} predictions answered, "
                  f"each logged to {topics.predictions} by the API)")
    etl = run_batch(settings, views=definitions.views)
    if etl.get("skipped"):
        console.print(f"etl run: {etl['skipped']}")
    else:
        console.print(f"etl run (incremental): dates {etl['start']} .. {etl['end']} recomputed in {etl['seconds']}s")
    t0 = time.perf_counter()
    report = check_served(settings, definitions.services, since=since)
    check_s = round(time.perf_counter() - t0, 2)
    t = report["totals"]
    bad = t["mismatches"] + t["missing"] + t["extra"]
    colour = "green" if bad == 0 else "red"
    console.print(f"[{colour}]{t['mismatches']:,} mismatches, {t['missing']:,} missing, {t['extra']:,} extra"
                  f"[/{colour}] in {t['compared']:,} served values of {report['compared_predictions']:,} "
                  f"predictions: every prediction made since {since:%H:%M:%S} UTC (this demo's), each compared "
                  f"at its transaction's event_time; {report['not_yet_covered']:,} not yet covered by the batch job")
    for name, c in report["coverage"].items():
        console.print(f"  {name}: the offline tables are final until {c['covered_until']} ({c['decided_by']})")
    for ex in report["examples"]:
        console.print(f"  {ex['kind']}: {ex['feature']} request {ex['request_id']} {ex['entity']}: served "
                      f"{ex['served']}, offline {ex['offline']}", highlight=False, soft_wrap=True)
    return {"landed": landed["valid"], "landed_topics": per_topic,
            "etl": {k: etl.get(k) for k in ("start", "end", "seconds", "skipped") if k in etl},
            "predictions": report["predictions"], "compared_predictions": report["compared_predictions"],
            "not_yet_covered": report["not_yet_covered"], "since": report["since"], "at": report["at"],
            "coverage": report["coverage"], "totals": t, "check_seconds": check_s,
            "features_differing": {n: c for n, c in report["features"].items() if c["compared"] != c["matches"]},
            "examples": report["examples"]}
