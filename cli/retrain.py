"""``skewless retrain``: a challenger on the newest mature window against the champion on the
same frozen holdout; promoted only when it wins on expected cost by ``retrain.margin`` with
its paired bootstrap interval clear of zero (``training.retrain``)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cli.common import ConfigOpt, JsonOpt, VerboseOpt, console, emit, handle_errors, parse_time, settings_from

app = typer.Typer(help="Retrain: challenger vs champion on one holdout, promote only on a clear win.",
                  invoke_without_command=True)


@app.callback()
@handle_errors
def retrain(
    ctx: typer.Context,
    if_drift: Annotated[bool, typer.Option(
        "--if-drift", help="only when the latest drift check (skewless monitor drift) flagged drift")] = False,
    cutoff: Annotated[Optional[str], typer.Option(
        help="labels known at this time count; the holdout ends training.label_maturity_days before it "
             "(default: now)")] = None,
    config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Train a challenger, evaluate champion and challenger on the same holdout, promote or keep."""
    if ctx.invoked_subcommand is not None:
        return
    settings = settings_from(config)
    known_at = parse_time(cutoff, "--cutoff")
    from training.retrain import drift_gate, retrain as run

    trigger = "on request"
    if if_drift:
        go, why = drift_gate(settings)
        if not go:
            summary = {"retrained": False, "promoted": False, "reason": why}
            emit(summary, json_out, lambda: console.print(f"not retraining: {why}", highlight=False))
            return
        trigger = why

    from skewless.features.store import feature_store

    with console.status("retraining ...") as status:
        summary = {"retrained": True, **run(settings, feature_store(settings), known_at, trigger,
                                            on_step=lambda s: status.update(s))}

    emit(summary, json_out, lambda: print_decision(summary))


def print_decision(summary: dict) -> None:
    """The holdout, both models' cost per transaction with its interval, and the verdict."""
    from rich.table import Table

    d, ev = summary["decision"], summary["evaluations"]
    h = summary["holdout"]
    console.print(f"holdout {h['start']} .. {h['end']}: {h['rows']:,} transactions, {h['frauds']} frauds, "
                  f"{h['cards']:,} cards (labels known at {h['cutoff']})", highlight=False)
    level = f"{d['confidence']:.0%}"
    table = Table("model", "version", "pr auc", "cost", f"cost per tx [{level}]", "caught", "false alarms")
    for role, mean, (lo, hi) in (("champion", d["champion_cost"], d["champion_cost_ci"]),
                                 ("challenger", d["challenger_cost"], d["challenger_cost_ci"])):
        e = ev[role]
        table.add_row(role, summary["models"][role]["version"], f"{e['pr_auc']:.3f}", f"{e['cost']:,.0f}",
                      f"{mean:.4g} [{lo:.4g}, {hi:.4g}]", f"{e['caught_fraud']:,}", f"{e['false_alarms']:,}")
    console.print(table)
    verdict = "[green]PROMOTED[/green]" if summary["promoted"] else "[yellow]kept the champion[/yellow]"
    console.print(f"{verdict}: {summary['reason']}; champion is version {summary['champion']} "
                  f"(MLflow run {summary['run_id']})", highlight=False)
