"""``skewless features apply|materialize|get``: the Feast registry and the online store."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from cli.common import (ConfigOpt, JsonOpt, VerboseOpt, console, emit, handle_errors, parse_time, progress,
                        settings_from)
from skewless.errors import ConfigError

app = typer.Typer(help="Feast: register features, materialize them online, look them up.", no_args_is_help=True)


@app.command("apply")
@handle_errors
def apply(config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Register the DSL's entities, views, on-demand views and services in Feast."""
    from skewless.features.definitions import load
    from skewless.features.store import apply as run

    settings = settings_from(config)
    summary = run(settings, load(settings))
    def human() -> None:
        console.print(f"applied to project {summary['project']}: {', '.join(summary['applied'])}")
        console.print(f"the stock Feast CLI sees the same registry: {summary['feast_cli']}", highlight=False)

    emit(summary, json_out, human)


@app.command("materialize")
@handle_errors
def materialize(
    end: Annotated[Optional[str], typer.Option(help="materialize rows up to this time (ISO; default now)")] = None,
    full: Annotated[bool, typer.Option("--full", help="clear the online store and rebuild it (after a view's features change; a lost store is "
                                                        "reloaded in full without it)")] = False,
    config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Load the offline tables' latest rows into the online store (incremental by default)."""
    from skewless.features.store import materialize as run

    with progress() as bar:
        task = bar.add_task("entities materialized", total=None)
        summary = run(settings_from(config), parse_time(end, "--end"), full=full,
                      on_progress=lambda done, total: bar.update(task, completed=done, total=total))

    def human() -> None:
        if summary["store_lost"]:
            console.print(f"{summary['full_reason']}: reloaded every view in full", style="yellow", markup=False,
                          highlight=False)
        keys = ", ".join(f"{v} {n}" for v, n in summary["keys"].items())
        console.print(f"materialized {'in full ' if summary['full'] else ''}up to {summary['end']} into "
                      f"{summary['online_store']} in {summary['seconds']}s" + (f" (entity keys: {keys})" if keys else "")
                      + (f" from {sum(summary['rows'].values()):,} offline rows" if summary["rows"] else ""),
                      highlight=False)

    emit(summary, json_out, human)


def _pairs(items: list[str], flag: str) -> dict[str, str | float]:
    out: dict[str, str | float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} takes KEY=VALUE, got {item!r}")
        try:
            out[key] = float(value) if flag == "--request" else value
        except ValueError:
            raise ConfigError(f"{flag} {key} must be a number, got {value!r}") from None
    return out


@app.command("get")
@handle_errors
def get(
    entity: Annotated[list[str], typer.Option("--entity", "-e", help="join key, e.g. user_id=u000001 (repeatable)")],
    request: Annotated[Optional[list[str]], typer.Option("--request", "-r", help="request field, e.g. amount=120.5")] = None,
    feature_service: Annotated[Optional[str], typer.Option("--feature-service", help="read this whole FeatureService")] = None,
    config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Online feature values for one entity."""
    from skewless.features.definitions import load
    from skewless.features.store import get_online

    settings = settings_from(config)
    values = get_online(settings, load(settings), _pairs(entity, "--entity"), _pairs(request or [], "--request"),
                        feature_service)

    def human() -> None:
        t = Table("feature", "value")
        for k, v in sorted(values.items()):
            t.add_row(k, str(v))
        console.print(t)

    emit(values, json_out, human)
