"""``skewless check consistency``: online values vs the offline point-in-time join
(sampled entities), or with ``--served`` the values each logged prediction was scored
with vs the offline point-in-time values (``monitoring.served_consistency``)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from cli.common import (ConfigOpt, JsonOpt, VerboseOpt, console, emit, handle_errors, parse_time, progress,
                        settings_from)
from skewless.errors import ConfigError

app = typer.Typer(help="Checks that prove the platform's promises.", no_args_is_help=True)


@app.command("consistency")
@handle_errors
def consistency(
    served: Annotated[bool, typer.Option("--served", help="the prediction log's served values vs the offline "
                                         "point-in-time values at the transaction's time")] = False,
    sample: Annotated[Optional[float], typer.Option(
        "--sample", help="entities to compare (default 200); with --served the share of predictions, "
                         "a fraction in (0, 1] (default 1: all)")] = None,
    since: Annotated[Optional[str], typer.Option(
        "--since", help="with --served: predictions made at or after this ISO time (predicted_at)")] = None,
    at: Annotated[str, typer.Option(
        "--at", help="with --served: compare at the transaction's event_time or at predicted_at")] = "event_time",
    feature_service: Annotated[Optional[str], typer.Option("--feature-service")] = None,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Sample entities; compare every online value with the offline point-in-time value.
    With --served: every logged prediction's features against the offline values."""
    settings = settings_from(config)
    if served:
        _served(settings, sample, since, at, feature_service, json_out)
        return
    if since is not None or at != "event_time":
        raise ConfigError("--since and --at apply to --served only")
    if sample is not None and (sample != int(sample) or sample < 1):
        raise ConfigError(f"--sample is a number of entities (an integer >= 1) without --served, got {sample:g}")
    from monitoring.consistency import check, sample_entities
    from skewless.features.store import feature_store

    report = check(settings, feature_store(settings), sample_entities(settings, int(sample or 200), seed),
                   feature_service)

    def human() -> None:
        colour = "green" if report["mismatches"] == 0 else "red"
        console.print(f"[{colour}]{report['mismatches']} mismatches[/{colour}] in {report['values_compared']:,} values "
                      f"({report['entities']} entities x {report['features']} features of {report['feature_service']}, "
                      f"as of {report['at']})")
        for ex in report["examples"]:
            console.print(ex)

    emit(report, json_out, human)
    if report["mismatches"]:
        raise typer.Exit(1)


def _served(settings: Any, sample: float | None, since: str | None, at: str, feature_service: str | None,
            json_out: bool) -> None:
    from monitoring.served_consistency import check_served
    from skewless.features.definitions import load

    services = load(settings).services
    if feature_service is not None:
        services = tuple(s for s in services if s.name == feature_service)
        if not services:
            raise ConfigError(f"no feature service {feature_service!r} in the feature definitions")
    with progress() as bar:
        task = bar.add_task("served consistency", total=None)
        report = check_served(settings, services, since=parse_time(since, "--since"),
                              sample=1.0 if sample is None else sample, at=at,
                              on_step=lambda s: bar.update(task, description=s))
        bar.update(task, description="served consistency: done")
    from monitoring.served_consistency import save_report

    report["saved"] = str(save_report(settings, report))  # read back by skewless monitor report
    emit(report, json_out, lambda: _human(report))
    t = report["totals"]
    if t["mismatches"] or t["missing"] or t["extra"]:
        raise typer.Exit(1)


def _human(report: dict[str, Any]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Column, Table

    t = report["totals"]
    bad = t["mismatches"] + t["missing"] + t["extra"]
    colour = "green" if bad == 0 else "red"
    console.print(f"[{colour}]{t['mismatches']:,} mismatches, {t['missing']:,} missing, {t['extra']:,} extra"
                  f"[/{colour}] in {t['compared']:,} served values of {report['compared_predictions']:,} predictions "
                  f"(compared at {report['at']}); {report['not_yet_covered']:,} predictions not yet covered by the "
                  f"batch job, {report['predictions']:,} read")
    for name, c in report["coverage"].items():
        console.print(f"  {name}: covered until {c['covered_until']} ({c['decided_by']}; ETL run started "
                      f"{c['etl_started_at']})")
    if report["unknown_feature_service"]:
        console.print(f"  not compared, feature service not in the definitions: {report['unknown_feature_service']}")
    if report["unknown_features"]:
        console.print(f"  not compared, features the definitions do not declare: {report['unknown_features']}")
    table = Table(Column("feature", no_wrap=True), *(Column(h, justify="right", no_wrap=True) for h in (
        "compared", "matches", "mismatches", "missing", "extra", "SMAPE %")), box=box.SIMPLE_HEAD)
    for name, c in report["features"].items():
        smape = "-" if c["smape_pct"] is None else f"{c['smape_pct']:.4g}"
        style = None if c["compared"] == c["matches"] else "red"
        table.add_row(name, f"{c['compared']:,}", f"{c['matches']:,}", f"{c['mismatches']:,}", f"{c['missing']:,}",
                      f"{c['extra']:,}", smape, style=style)
    # Feature names are long: never squeeze the counts (a wider copy of the console, same stream).
    Console(file=console.file, width=max(console.width, 120), force_terminal=console.is_terminal,
            no_color=console.no_color).print(table)
    for ex in report["examples"]:
        console.print(f"  {ex['kind']}: {ex['feature']} request {ex['request_id']} {ex['entity']} at "
                      f"{ex[report['at']]}: served {ex['served']}, offline {ex['offline']}", highlight=False, soft_wrap=True)
