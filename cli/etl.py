"""``skewless etl run``: Spark batch feature job (backfill or incremental)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Optional

import typer
from rich.table import Table

from cli.common import ConfigOpt, JsonOpt, VerboseOpt, console, emit, handle_errors, progress, settings_from
from skewless.errors import ConfigError
from skewless.settings_checks import check_spark_master

app = typer.Typer(help="Spark feature jobs: lake -> offline feature tables.", no_args_is_help=True)


def _date(text: str | None, flag: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise ConfigError(f"{flag} must be a date (YYYY-MM-DD), got {text!r}") from None


def _check_master(master: str | None) -> None:
    if master is not None:
        try:
            check_spark_master(master)
        except ValueError as exc:
            raise ConfigError(f"--master {exc}") from None


@app.command("run")
@handle_errors
def run(
    start: Annotated[Optional[str], typer.Option(help="first output date (default: incremental since the last run)")] = None,
    end: Annotated[Optional[str], typer.Option(help="end output date, exclusive (default: end of data + longest window)")] = None,
    master: Annotated[Optional[str], typer.Option(help="Spark master URL (default: settings.spark_master)")] = None,
    engine: Annotated[str, typer.Option(
        help="auto: a small incremental run on a local master computes in this process with the same code "
             "(no Spark start); spark: always a Spark job")] = "auto",
    config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Compute every feature view from the raw lake and write the offline tables."""
    settings = settings_from(config)
    first, last = _date(start, "--start"), _date(end, "--end")
    if first is not None and last is not None and last <= first:
        raise ConfigError(f"--end {last} must be after --start {first} (the output dates are [start, end))")
    _check_master(master)
    from etl.batch import check_engine, run_batch

    check_engine(engine)
    from skewless.features.definitions import load

    views = load(settings).views
    with progress() as bar:
        task = bar.add_task("feature views", total=None)
        summary = run_batch(settings, first, last, master, views=views, engine=engine,
                            on_view=lambda name, done, total: bar.update(task, completed=done, total=total))

    def human() -> None:
        t = Table("view", "rows", "path")
        for name, v in summary["views"].items():
            t.add_row(name, f"{v['rows']:,}", v["path"])
        console.print(t)
        if summary.get("skipped"):
            console.print(summary["skipped"])
        else:
            where = ("in this process (a small incremental run: no Spark job)" if summary.get("engine") == "local"
                     else f"on {summary['master']}")
            console.print(f"dates {summary['start']} .. {summary['end']}: {summary['events_read']:,} events in "
                          f"{summary['seconds']}s {where}")
            if first is None and summary.get("watermark_moved") is False:
                console.print(f"--end cut this incremental run short: its entities' rows from {summary['end']} on "
                              "come with the next run without --end")

    emit(summary, json_out, human)


@app.command("stream")
@handle_errors
def stream(
    until_idle: Annotated[Optional[float], typer.Option(
        "--until-idle", help="stop once no record arrived for this many seconds and nothing is left to read")] = None,
    master: Annotated[Optional[str], typer.Option(help="Spark master URL (default: settings.spark_master)")] = None,
    rebuild: Annotated[bool, typer.Option(
        "--rebuild", help="forget the stream's state and rebuild it from the topics' earliest offsets "
        "(after the topics were deleted and created again)")] = False,
    config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Keep the online store current from Kafka: the same views, exact and decaying (Ctrl-C stops)."""
    import signal
    import threading

    settings = settings_from(config)
    if until_idle is not None and until_idle <= 0:
        raise ConfigError(f"--until-idle must be positive seconds, got {until_idle}")
    _check_master(master)
    from etl.stream import run_stream
    from skewless.features.definitions import load

    views = load(settings).views
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with progress() as bar:
        task = bar.add_task("events applied", total=None)
        done = [0]

        def on_batch(report) -> None:
            done[0] += report.applied
            bar.update(task, completed=done[0])

        summary = run_stream(settings, views=views, until_idle=until_idle, master=master, on_batch=on_batch, stop=stop,
                             rebuild=rebuild)

    def human() -> None:
        console.print(f"{summary['applied']:,} events applied in {summary['batches']} micro-batches "
                      f"({summary['invalid']} invalid, {summary['retries']} retries dropped, "
                      f"{summary['too_late']} past every window); {summary['rows_published']:,} rows published; "
                      f"lag {summary['lag']} records; {summary['seconds']}s on {summary['master']}")
        if summary["rebuilt"]:
            console.print("the state was rebuilt from the earliest offsets (--rebuild, no offsets kept, or offsets past the topics' ends)")

    emit(summary, json_out, human)
