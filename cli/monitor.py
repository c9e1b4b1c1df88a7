"""``skewless monitor drift``: the live predictions against the champion's training set
(``monitoring.live_drift``, statistics in ``monitoring.drift``); ``skewless monitor report``:
one self-contained HTML page of what monitoring knows (``monitoring.report``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cli.common import ConfigOpt, JsonOpt, VerboseOpt, console, emit, handle_errors, parse_time, progress, settings_from

app = typer.Typer(help="Monitoring: drift of live traffic against the training set, and the report.", no_args_is_help=True)


@app.command("drift")
@handle_errors
def drift(
    reference: Annotated[Optional[str], typer.Option(
        "--reference", help="MLflow run id holding the reference (default: the champion's training run)")] = None,
    since: Annotated[Optional[str], typer.Option(
        "--since", help="predictions made at or after this ISO time (with --window: for that long; else until now)")] = None,
    window: Annotated[Optional[str], typer.Option(
        "--window", help="length of the live sample, e.g. 24h, 90m, 7d (default: monitoring.window, the last 24h)")] = None,
    config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Per model feature and for the score: is live traffic drifting from the training set?

    A feature drifts when its change is material (at least its threshold: W1 in robust
    sigmas, Jensen-Shannon distance, missing-rate points) and significant (permutation
    p-value, Holm-corrected at monitoring.alpha). Exit status 0 either way; "drifted" in
    the JSON summary tells.
    """
    from monitoring.live_drift import check_drift

    settings = settings_from(config)
    with progress() as bar:
        task = bar.add_task("drift", total=None)
        result = check_drift(settings, reference, parse_time(since, "--since"), window,
                             on_step=lambda s: bar.update(task, description=s))
        bar.update(task, description="drift: done")
    emit(result, json_out, lambda: _human(result))


def _fmt(x: Any, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def _human(r: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Column, Table

    colour = "red" if r["drifted"] else "green"
    verdict = f"drift in {', '.join(r['drifted_features'])}" if r["drifted"] else "no drift"
    console.print(f"[{colour}]{verdict}[/{colour}]: {r['predictions']:,} predictions of model version "
                  f"{r['model_version']} from {r['window']['start']} to {r['window']['end']} against run "
                  f"{r['reference_run']} ({_fmt(r['reference_rows'], ',')} training rows); {r['tests']} tests, "
                  f"Holm at alpha {r['alpha']}", highlight=False)
    if r["other_model_versions"]:
        console.print(f"  {r['other_model_versions']:,} predictions by other model versions not compared")
    table = Table(Column("feature", no_wrap=True), "signal", *(Column(h, justify="right") for h in (
        "value", "threshold", "p (Holm)", "PSI")), "verdict", box=box.SIMPLE_HEAD)
    for f in r["features"]:
        for i, s in enumerate(f["signals"]):
            verdict = "[red]DRIFT[/red]" if s["drifted"] else (s["note"] or "ok")
            table.add_row(f["name"] if i == 0 else "", f"{s['signal']} ({s['statistic']})", _fmt(s["value"]),
                          _fmt(s["threshold"]), _fmt(s["p_adjusted"] if s["p_value"] is not None else None),
                          _fmt(f["psi"]) if i == 0 else "", verdict)
    console.print(table)
    if r.get("saved"):
        console.print(f"saved: {r['saved']}", highlight=False)
    if r.get("latest") is False:
        console.print("not the latest: a check of newer traffic is saved, and serving's skewless_drift_* gauges "
                      "keep showing it", highlight=False)


@app.command("report")
@handle_errors
def report(
    out: Annotated[Path, typer.Option("--out", help="directory to write report.html into (created if missing)")],
    history: Annotated[int, typer.Option("--history", min=1, help="saved drift checks shown over time (newest)")] = 48,
    config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """One self-contained HTML page (inline SVG, no script, opens from disk): reference vs live
    distributions, the score, drift over time, data quality, consistency as served,
    freshness, champion vs challenger. Drawn from histograms and saved check results, never
    raw rows; a section without data says why."""
    from monitoring.report import monitor_report

    settings = settings_from(config)
    with progress() as bar:
        task = bar.add_task("report", total=None)
        result = monitor_report(settings, out, history, on_step=lambda s: bar.update(task, description=s))
        bar.update(task, description="report: done")

    def human() -> None:
        console.print(f"report: {result['path']} ({result['bytes'] / 1024:,.0f} kB)", highlight=False, soft_wrap=True)
        for name, why in result["missing"].items():
            console.print(f"  no {name}: {why}", highlight=False, soft_wrap=True)

    emit(result, json_out, human)


@app.command("performance")
@handle_errors
def performance(
    since: Annotated[Optional[str], typer.Option("--since", help="predictions made at or after this ISO time")] = None,
    until: Annotated[Optional[str], typer.Option("--until", help="predictions made before this ISO time")] = None,
    config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Realised performance of the served models: the logged predictions whose chargebacks had
    time to arrive (training.label_maturity_days) against the labels in the lake — PR-AUC,
    recall, review rate and the cost of the decisions taken, per model version."""
    from rich.table import Table

    from monitoring.realised import realised_performance

    settings = settings_from(config)
    result = realised_performance(settings, parse_time(since, "--since"), parse_time(until, "--until"))

    def human() -> None:
        t = Table("model version", "predictions", "frauds", "PR-AUC", "recall", "review rate", "cost", "savings")
        rows = list(result["by_model_version"].items()) + [("all", result["overall"])]
        for name, f in rows:
            t.add_row(name, f"{f['predictions']:,}", f"{f['frauds']:,}", _fmt(f["pr_auc"]), _fmt(f["recall"]),
                      _fmt(f["review_rate"]), f"{f['cost']:,.2f}", f"{f['savings']:,.2f}")
        console.print(t)
        console.print(f"{result['too_young']:,} of {result['predictions']:,} predictions are younger than "
                      f"{result['label_maturity_days']:g} days (labels may still come): not counted")

    emit(result, json_out, human)
