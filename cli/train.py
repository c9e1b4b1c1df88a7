"""``skewless train``: training set through Feast, models, evaluation, MLflow; ``train promote``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Optional

import typer
from rich.table import Table

from cli.common import ConfigOpt, parse_time, JsonOpt, VerboseOpt, console, emit, handle_errors, settings_from
from skewless.errors import ConfigError

app = typer.Typer(help="Train, evaluate, track and promote the fraud model.", invoke_without_command=True)

METRICS = ["pr_auc", "roc_auc", "cv_pr_auc_mean", "cost", "savings", "caught_fraud", "false_alarms"]


def results_table(results: dict, chosen: str | None = None) -> Table:
    """Chosen on validation PR-AUC (first column); the rest is the test split, reported only."""
    recall_key = next((k for k in next(iter(results.values())) if k.startswith("recall_at_p")), None)
    cols = ["val_pr_auc"] + METRICS[:2] + ([recall_key] if recall_key else []) + METRICS[2:]
    table = Table("model", *[c.replace("_", " ") for c in cols],
                  caption="* chosen by val pr auc (thresholds too: cost on validation); cv on train; "
                          "the other columns are the test split, reported only")
    for name, r in results.items():
        table.add_row(f"{name} *" if name == chosen else name,
                      *(f"{r[c]:,.0f}" if c in ("cost", "savings") else f"{r[c]:.3f}" if isinstance(r[c], float)
                        else f"{r[c]:,}" for c in cols))
    return table


def check_window(start: datetime | None, end: datetime | None, cutoff: datetime | None, maturity_days: float) -> None:
    """Reject a window that cannot hold a training row, before any work starts."""
    if start is not None and end is not None and end <= start:
        raise ConfigError(f"--end {end.isoformat()} must be after --start {start.isoformat()}")
    known_at = cutoff or end
    if start is not None and known_at is not None and known_at - timedelta(days=maturity_days) <= start:
        flag = "--cutoff" if cutoff else "--end"
        raise ConfigError(
            f"{flag} {known_at.isoformat()} leaves no transaction after --start {start.isoformat()} "
            f"{maturity_days:g} days old (training.label_maturity_days), so none has a label to learn from",
            f"move --start earlier or {flag} later",
        )


@app.callback()
@handle_errors
def train(
    ctx: typer.Context,
    feature_service: Annotated[Optional[str], typer.Option("--feature-service", help="default: training.feature_service")] = None,
    start: Annotated[Optional[str], typer.Option(help="first transaction time (ISO)")] = None,
    end: Annotated[Optional[str], typer.Option(help="end of the window (ISO, exclusive)")] = None,
    cutoff: Annotated[Optional[str], typer.Option(help="labels known at this time count (default: --end or now)")] = None,
    promote: Annotated[bool, typer.Option("--promote", help="make the new version the champion")] = False,
    config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Build the training set through Feast, fit the candidates, evaluate by cost, track, register."""
    if ctx.invoked_subcommand is not None:
        return
    settings = settings_from(config)
    first, last, known_at = parse_time(start, "--start"), parse_time(end, "--end"), parse_time(cutoff, "--cutoff")
    check_window(first, last, known_at, settings.training.label_maturity_days)

    from skewless.features.store import feature_store
    from training.trainer import train as run

    with console.status("training ...") as status:
        summary = run(settings, feature_store(settings), feature_service, first, last, known_at,
                      promote_champion=promote, on_step=lambda s: status.update(s))

    def human() -> None:
        console.print(results_table(summary["results"], summary["chosen"]))
        console.print(f"chosen on {summary['selected_on']} {summary['selection_metric'].replace('_', '-')}: "
                      f"{summary['chosen']} -> {summary['model']} version {summary['registered_version']}"
                      f"{' (champion)' if summary['promoted'] else ''}; training set {summary['rows']:,} rows "
                      f"in {summary['training_set_seconds']}s")

    emit(summary, json_out, human)


@app.command("promote")
@handle_errors
def promote_cmd(
    version: Annotated[Optional[str], typer.Argument(help="registered version (default: the newest)")] = None,
    config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Make a registered model version the champion that serving loads."""
    from skewless.registry import promote as run

    result = run(settings_from(config), version)
    emit(result, json_out, lambda: console.print(f"{result['model']} version {result['version']} is now the champion"))
