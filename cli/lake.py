"""``skewless lake compact``: the lake's upkeep (a thin layer over ``ingestion.compact``)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from cli.common import ConfigOpt, JsonOpt, VerboseOpt, console, emit, handle_errors, progress, settings_from
from skewless.errors import ConfigError

app = typer.Typer(help="Lake upkeep: compact small raw files into large ones.", no_args_is_help=True)


@app.command("compact")
@handle_errors
def compact(
    topic: Annotated[Optional[list[str]], typer.Option("--topic", help="topic to compact (repeatable); "
                                                        "default: every contract's topic")] = None,
    before: Annotated[Optional[str], typer.Option("--before", help="compact only event dates before this one "
                                                  "(YYYY-MM-DD, UTC); default: every date")] = None,
    config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Rewrite each date partition's small raw files into files of about compaction.target_file_bytes.

    Atomic for every reader (a compaction manifest is the commit point); the inputs are
    deleted by a later run, compaction.grace_s after the commit. A crashed run is
    finished or undone by the next one."""
    from datetime import date

    from ingestion.compact import run

    day = None
    if before is not None:
        try:
            day = date.fromisoformat(before)
        except ValueError:
            raise ConfigError(f"--before must be a date (YYYY-MM-DD), got {before!r}") from None
    settings = settings_from(config)
    with progress() as bar:
        task = bar.add_task("dates compacted", total=None)
        summary = run(settings, topic or None, day, on_progress=lambda t, i, n: bar.update(
            task, completed=i, total=n, description=f"{t}: dates"))

    def human() -> None:
        t = Table("topic", "dates compacted", "files before", "files after", "rows rewritten", "MB in", "MB out",
                  "inputs deleted", "orphans removed")
        for name, r in summary["topics"].items():
            t.add_row(name, f"{r['dates_compacted']}/{r['dates']}", f"{r['files_before']:,}", f"{r['files_after']:,}",
                      f"{r['rows_rewritten']:,}", f"{r['bytes_in'] / 1e6:.1f}", f"{r['bytes_out'] / 1e6:.1f}",
                      f"{r['inputs_deleted']:,}", str(r["orphans_removed"]))
        console.print(t)
        console.print(f"inputs are deleted by a later run, {summary['grace_s']:g} s after their compaction committed")

    emit(summary, json_out, human)
