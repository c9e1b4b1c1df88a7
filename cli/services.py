"""``skewless services up|down|status``: real local Kafka (KRaft) and Redis."""

from __future__ import annotations

import typer
from rich.table import Table

from skewless import services
from cli.common import ConfigOpt, JsonOpt, VerboseOpt, console, emit, handle_errors, settings_from

app = typer.Typer(help="Start, stop and inspect the local Kafka broker and Redis.", no_args_is_help=True)


def _table(result: dict) -> None:
    table = Table("service", "running", "address", "pid", "note")
    for name, st in result.items():
        note = "started" if st.get("started") else ("stopped" if st.get("stopped") else "")
        if st.get("running") and not st.get("managed"):
            note = note or "external (not started by skewless)"
        if st.get("persistence"):
            note = ", ".join(filter(None, [note, f"persistence: {st['persistence']}"]))
        table.add_row(name, str(st.get("running", False)), st.get("address", ""), str(st.get("pid") or ""), note)
    console.print(table)


@app.command("up")
@handle_errors
def up(config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Start Kafka and Redis (idempotent) and wait until both answer."""
    settings = settings_from(config)
    with console.status("starting Kafka (first run downloads its jars with mvn) and Redis ..."):
        result = services.up(settings)
    emit(result, json_out, lambda: _table(result))


@app.command("down")
@handle_errors
def down(config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Stop the services that `up` started."""
    settings = settings_from(config)
    result = services.down(settings)
    emit(result, json_out, lambda: _table(services.status(settings)))


@app.command("status")
@handle_errors
def status(config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Is each service answering?"""
    result = services.status(settings_from(config))
    emit(result, json_out, lambda: _table(result))
    if not all(st["running"] for st in result.values()):
        raise typer.Exit(1)
