"""``skewless check consistency``: online values vs the offline point-in-time join."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cli.common import ConfigOpt, JsonOpt, VerboseOpt, console, emit, handle_errors, settings_from

app = typer.Typer(help="Checks that prove the platform's promises.", no_args_is_help=True)


@app.command("consistency")
@handle_errors
def consistency(
    sample: Annotated[int, typer.Option("--sample", min=1, help="entities to compare")] = 200,
    feature_service: Annotated[Optional[str], typer.Option("--feature-service")] = None,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Sample entities; compare every online value with the offline point-in-time value."""
    from monitoring.consistency import check, sample_entities
    from skewless.features.store import feature_store

    settings = settings_from(config)
    report = check(settings, feature_store(settings), sample_entities(settings, sample, seed), feature_service)

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
