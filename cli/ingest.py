"""``skewless ingest produce|consume|verify``: simulated events -> Kafka -> the lake, audited."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Optional

import typer
from rich.table import Table

from cli.common import ConfigOpt, parse_time, JsonOpt, VerboseOpt, console, emit, handle_errors, progress, settings_from
from skewless.errors import ConfigError

app = typer.Typer(help="Streaming ingestion: produce simulated events, land them in the lake, audit.", no_args_is_help=True)

LIBRARY_SUMMARY_EVERY_S = 60.0


class _LibraryDigest(logging.Handler):
    """kafka-python's own log lines, kept out of the user's way.

    Without ``--verbose`` the client's connection errors and retries (a score of lines
    for one unreachable broker) are not printed; the command's own error or warning says
    what happened. Only a condition that lasts (the broker away for a minute while
    ``consume`` waits for it) gives one line a minute, naming the latest message.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.first_at: float | None = None
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        now = time.monotonic()
        if self.first_at is None:
            self.first_at, self.count = now, 0
        self.count += 1
        if now - self.first_at >= LIBRARY_SUMMARY_EVERY_S:
            logging.getLogger("skewless.kafka").warning(
                "Kafka client: %d warnings in the last %.0fs, the latest: %s (--verbose shows them all)",
                self.count, now - self.first_at, record.getMessage())
            self.first_at = None


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    if not verbose:
        library = logging.getLogger("kafka")
        library.propagate = False
        library.handlers[:] = [_LibraryDigest()]


@app.command("produce")
@handle_errors
def produce(
    events: Annotated[int, typer.Option("--events", "-n", min=1, help="transactions to simulate")] = 10_000,
    seed: Annotated[int, typer.Option(help="random seed: same seed and start, same events")] = 42,
    bad_fraction: Annotated[float, typer.Option("--bad-fraction", min=0.0, max=0.99, help="share of malformed messages")] = 0.0,
    start: Annotated[Optional[str], typer.Option(help="first event time (ISO, UTC); default: DAYS days ago")] = None,
    days: Annotated[int, typer.Option(min=1, help="days of traffic")] = 7,
    rate: Annotated[Optional[float], typer.Option(min=1.0, help="messages per second (default: as fast as possible)")] = None,
    schema_version: Annotated[int, typer.Option("--schema-version", min=1, max=2, help="transaction contract version")] = 2,
    drift: Annotated[Optional[str], typer.Option(
        "--drift", metavar="KIND", help="make the traffic drift: amount-shift (amounts x1.5), fraud-pattern (card-testing "
        "bursts of tiny amounts), country-mix (40% of payments from a new mix of countries), broken-field (mcc turns "
        "null; the one field the contract lets be null), card-enumeration (waves of stolen cards, each used once for "
        "a small amount at one of a few merchants: a fraud a model trained before it reads as safe). Default: no drift")] = None,
    drift_from: Annotated[Optional[str], typer.Option(
        "--drift-from", help="drift starts at this ISO time (default: with the traffic)")] = None,
    drift_fraction: Annotated[Optional[float], typer.Option(
        "--drift-fraction", min=0.0, max=1.0,
        help="drift starts this fraction of the way through the period, e.g. 0.75")] = None,
    config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Send seeded, realistic payments traffic (and chargeback labels) to Kafka.

    With --drift, the events before the drift starts are those of the run without it."""
    from ingestion.producer import produce as run
    from ingestion.simulator import DRIFT_KINDS, default_start, drift_start_at

    _setup_logging(verbose)
    first = parse_time(start, "--start")
    drift_at = parse_time(drift_from, "--drift-from")
    if drift is not None and drift not in DRIFT_KINDS:
        raise ConfigError(f"--drift must be one of {', '.join(DRIFT_KINDS)}, got {drift!r}")
    if drift is None and (drift_at is not None or drift_fraction is not None):
        raise ConfigError("--drift-from and --drift-fraction need --drift KIND")
    if drift == "broken-field" and schema_version < 2:
        raise ConfigError("--drift broken-field nulls mcc, which --schema-version 1 lacks: use --schema-version 2")
    if drift is not None:
        try:
            drift_start_at(first or default_start(days), days, drift_at, drift_fraction)
        except ValueError as exc:
            raise ConfigError(f"--drift-from/--drift-fraction: {exc}") from None
    settings = settings_from(config)
    with progress() as bar:
        task = bar.add_task("producing", total=None)
        summary = run(settings, events=events, seed=seed, bad_fraction=bad_fraction, start=first,
                      days=days, rate=rate, schema_version=schema_version,
                      drift=drift, drift_from=drift_at, drift_fraction=drift_fraction,
                      on_progress=lambda done, total: bar.update(task, completed=done, total=total))

    def human() -> None:
        t = Table("topic", "produced", "valid", "bad")
        for topic, c in summary["topics"].items():
            t.add_row(topic, str(c["produced"]), str(c["valid"]), str(c["bad"]))
        console.print(t)
        console.print(f"{summary['produced']} messages in {summary['seconds']}s ({summary['events_per_s']}/s)")
        if summary["drift"]:
            d = summary["drift"]
            console.print(f"drift {d['kind']} from {d['start']}: {d['transactions']} transactions", highlight=False)

    emit(summary, json_out, human)


@app.command("consume")
@handle_errors
def consume(
    until_idle: Annotated[Optional[float], typer.Option("--until-idle", min=0.1, help="stop after this many seconds without messages")] = None,
    config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Land Kafka topics into the Parquet lake, exactly once, until SIGTERM/SIGINT or idle."""
    from ingestion.consumer import consume as run

    _setup_logging(verbose)
    settings = settings_from(config)
    with progress() as bar:
        task = bar.add_task("landing (events)", total=None)
        summary = run(settings, until_idle=until_idle,
                      on_progress=lambda stats: bar.update(task, completed=sum(s["consumed"] for s in stats.values())))

    def human() -> None:
        t = Table("topic", "consumed", "valid", "dead-lettered", "files")
        for topic, c in summary["topics"].items():
            t.add_row(topic, str(c["consumed"]), str(c["valid"]), str(c["dead_lettered"]), str(c["files"]))
        console.print(t)
        console.print(f"{summary['consumed']} events in {summary['seconds']}s -> {summary['lake_path']}")

    emit(summary, json_out, human)


@app.command("verify")
@handle_errors
def verify(
    lake_only: Annotated[bool, typer.Option("--lake-only", help="audit the lake alone, without the broker "
                                            "(offsets missing between landed ones all count as gaps)")] = False,
    config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Audit the lake against Kafka: per topic and partition, counts, duplicates, lost offsets, lag.

    Exits 1 if an offset landed twice or a record in Kafka landed nowhere, 4 if the
    broker does not answer (then --lake-only audits the lake alone)."""
    from ingestion.verify import verify as run

    _setup_logging(verbose)
    report = run(settings_from(config), check_kafka=not lake_only)

    def human() -> None:
        t = Table("topic", "partition", "valid", "dead-lettered", "committed", "lag", "duplicates", "gaps",
                  "markers", "ok")
        for topic, tr in report["topics"].items():
            for p, e in tr["partitions"].items():
                t.add_row(topic, p, str(e["valid"]), str(e["dead_lettered"]), str(e["committed"]), str(e["lag"]),
                          str(e["duplicates"]), str(e["gaps"] or ""), str(e["markers_or_aborted"]),
                          "yes" if e["ok"] else "[red]NO[/red]")
        console.print(t)
        if lake_only:
            console.print("lake only: committed offsets and lag not checked; a gap may be a transaction marker")

    emit(report, json_out, human)
    if not report["ok"]:
        raise typer.Exit(1)
