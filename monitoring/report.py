"""``skewless monitor report``: one self-contained HTML page of what monitoring knows.

It reads what the other checks left behind — never raw rows — and draws it as inline SVG
(``monitoring.svg``; no JavaScript, no CDN, opens from disk):

* **distributions**: per model feature, the reference (the champion's training set, the
  histograms saved with its MLflow run) against live traffic (the live histograms saved
  with the newest ``skewless monitor drift`` check), with that check's verdicts;
* **score**: the model's scores on held-out training rows against its live scores;
* **drift over time**: every feature's statistic over the saved checks (the last
  ``history``), as a ratio to its threshold, flagged cells outlined;
* **data quality**: dead letters per topic by reason (the ``reason`` column of the lake's
  dead letters; each reason grouped by its check, or by its text before the offending
  value), valid rows beside them (from the Parquet footers), and the newest feature-table
  check report of ``skewless etl run`` when there is one;
* **served consistency**: the newest saved ``skewless check consistency --served``;
* **freshness**: the streaming job's status (Redis), the online store's watermark, the
  last incremental ETL run;
* **models**: the champion's (and a challenger's, registry alias ``challenger``) test
  metrics from MLflow, with bootstrap intervals where the run recorded them (metrics
  ``<candidate>.<metric>_ci_low`` / ``_ci_high``).

A section without data says why and how to get it; it never fails the report. Reading
(``collect``) and drawing (``render``, in ``monitoring.report_html``) are separate, so the
benchmark draws synthetic inputs exactly as the command draws real ones.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from skewless.errors import SkewlessError
from skewless.histograms import Histogram, from_dict
from skewless.lake_layout import LakeLayout
from skewless.settings import Settings

REPORT_FILE = "report.html"
CHALLENGER = "challenger"
MAX_REASON_GROUPS = 15
SECTIONS = ("overview", "distributions", "score", "drift-over-time", "data-quality", "served-consistency",
            "freshness", "models")


@dataclass
class Part:
    """One section's data, or why there is none (``missing``: one sentence with the fix)."""

    data: Any = None
    missing: str | None = None


@dataclass
class ReportInputs:
    generated_at: datetime
    drift: Part = field(default_factory=Part)  # {"checks": [...oldest..newest], "live": {name: Histogram}}
    reference: Part = field(default_factory=Part)  # {"histograms": {name: Histogram}, "meta": {...}}
    dead_letters: Part = field(default_factory=Part)  # {topic: {"valid": n, "dead": n, "reasons": {group: [n, example]}}}
    table_checks: Part = field(default_factory=Part)  # the newest ETL feature-table check report
    served: Part = field(default_factory=Part)  # the newest served-consistency result
    freshness: Part = field(default_factory=Part)  # {"stream": ..., "watermark": ..., "etl": ...}
    models: Part = field(default_factory=Part)  # [{"alias", "version", "run_id", "candidate", "metrics": {...}}]
    title: str = "Skewless monitoring report"


# -- reading what the checks left ------------------------------------------------------------------

def _guard(read: Callable[[], Part], what: str) -> Part:
    """A reader's Part; any error becomes the section's "missing" sentence (one line)."""
    try:
        return read()
    except SkewlessError as exc:
        return Part(missing=f"{what}: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
    except Exception as exc:  # a report section never fails the report
        return Part(missing=f"{what} could not be read: {type(exc).__name__}: {str(exc)[:200]}")


def _json_files(directory: Path, pattern: str = "*.json") -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(pattern) if not p.name.startswith("."))


def read_drift(settings: Settings, history: int = 48) -> Part:
    """The last ``history`` saved drift checks (oldest first) and the newest one's live
    histograms."""
    files = _json_files(LakeLayout.of(settings).drift_dir)[-history:]
    if not files:
        return Part(missing="no drift check saved yet: run skewless monitor drift")
    checks, live = [], {}
    for i, path in enumerate(files):
        doc = json.loads(path.read_text())
        hists = doc.pop("live_histograms", None)
        if i == len(files) - 1 and hists:
            live = {n: from_dict(h) for n, h in hists.items()}
        checks.append(doc)
    return Part({"checks": checks, "live": live})


def read_reference(settings: Settings, run_id: str) -> Part:
    from monitoring.live_drift import load_reference

    hists, meta = load_reference(settings, run_id)
    return Part({"histograms": hists, "meta": {**meta, "run": run_id}})


def reason_group(reason: str) -> str:
    """What a dead letter failed, without the offending value: ``check <name>`` for a
    declared check, else the reason's text before its first ``: `` (and before ``, got``)."""
    text = (reason or "").strip()
    m = re.match(r"check ([\w.\-]+)", text)
    if m:
        return f"check {m.group(1)}"
    head = text.split(": ", 1)[0].split(", got ", 1)[0]
    head = re.sub(r"\d[\d,]*", "N", head)  # "event is 70,123 bytes" and "... 80,000 bytes" are one reason
    return head[:120] or "(no reason)"


def read_dead_letters(settings: Settings) -> Part:
    import pyarrow.parquet as pq

    layout = LakeLayout.of(settings)
    out: dict[str, Any] = {}
    for topic in settings.topics.by_contract().values():
        valid = 0
        for f in layout.raw_files(topic):
            valid += pq.ParquetFile(f.path).metadata.num_rows
        groups: Counter[str] = Counter()
        examples: dict[str, str] = {}
        dead = 0
        dl = layout.dead_letter_dir(topic)
        if dl.is_dir():
            for p in sorted(dl.glob("*.parquet")):
                if p.name.startswith((".", "_")):
                    continue
                for reason in pq.read_table(p, columns=["reason"]).column("reason").to_pylist():
                    g = reason_group(reason)
                    groups[g] += 1
                    examples.setdefault(g, (reason or "")[:200])
                    dead += 1
        if valid or dead:
            out[topic] = {"valid": valid, "dead": dead,
                          "reasons": {g: [n, examples[g]] for g, n in groups.most_common()}}
    if not out:
        return Part(missing="nothing landed in the lake yet: skewless ingest consume")
    return Part(out)


def read_table_checks(settings: Settings) -> Part:
    files = _json_files(LakeLayout.of(settings).quality_dir, "etl-*.json")
    if not files:
        return Part(missing="no feature-table check report yet (skewless etl run writes one per run)")
    return Part({**json.loads(files[-1].read_text()), "file": files[-1].name})


def read_served(settings: Settings) -> Part:
    files = _json_files(LakeLayout.of(settings).served_dir)
    if not files:
        return Part(missing="no served-consistency check saved yet: run skewless check consistency --served")
    return Part(json.loads(files[-1].read_text()))


def read_freshness(settings: Settings, now: datetime) -> Part:
    """The stream's status, the online store's watermark and the last ETL run; each part
    that cannot be read says why."""
    from skewless.features import stream_status, watermark

    out: dict[str, Any] = {"now": now.timestamp()}
    if settings.online_store == "redis":
        def stream() -> Part:
            import redis

            password = settings.redis_password.get_secret_value() if settings.redis_password else None
            with redis.Redis.from_url(settings.redis_url, password=password, socket_timeout=3,
                                      socket_connect_timeout=3) as client:
                status = stream_status.read(client, settings.feast_project)
            if status is None:
                return Part(missing="the streaming job has not run (skewless etl stream)")
            return Part({"applied_at": status.applied_at, "lag": status.lag, "events": status.events,
                         "batch": status.batch, "newest": status.newest})
        out["stream"] = _guard(stream, "the stream's status")
    else:
        out["stream"] = Part(missing="the online store is SQLite: the streaming job writes to Redis only")

    def marks() -> Part:
        got = watermark.read(settings)
        if not got:
            return Part(missing="the online store holds no watermark: skewless features materialize")
        return Part({v: {"until": m.until.timestamp(), "written_at": m.written_at.timestamp(), "keys": m.keys,
                         "writer": m.writer} for v, m in sorted(got.items())})
    out["watermark"] = _guard(marks, "the online store's watermark")

    def etl() -> Part:
        path = LakeLayout.of(settings).etl_state_path
        if not path.is_file():
            return Part(missing="no incremental ETL run yet: skewless etl run")
        return Part(json.loads(path.read_text()))
    out["etl"] = _guard(etl, "the ETL state")
    if all(p.missing for k, p in out.items() if k != "now"):
        return Part(missing="no freshness figures: " + "; ".join(out[k].missing for k in ("stream", "watermark", "etl")))
    return Part(out)


def _interval_metrics(metrics: dict[str, float], candidate: str) -> dict[str, list[float | None]]:
    """``{metric: [value, low, high]}`` of one candidate's test metrics in a training run."""
    prefix = f"{candidate}."
    own = {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}
    out = {}
    for name, value in own.items():
        if name.endswith(("_ci_low", "_ci_high")):
            continue
        out[name] = [value, own.get(f"{name}_ci_low"), own.get(f"{name}_ci_high")]
    return out


def read_models(settings: Settings) -> Part:
    from mlflow.exceptions import MlflowException

    from skewless.registry import CHAMPION, mlflow_client

    uri = settings.mlflow_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        return Part(missing="no MLflow store yet: skewless train --promote")
    client = mlflow_client(settings)
    name = settings.training.model_name
    models = []
    for alias in (CHAMPION, CHALLENGER):
        try:
            mv = client.get_model_version_by_alias(name, alias)
        except MlflowException:
            continue
        run = client.get_run(mv.run_id)
        candidate = run.data.params.get("chosen_model", "")
        models.append({"alias": alias, "version": str(mv.version), "run_id": mv.run_id, "candidate": candidate,
                       "trained_at": run.info.start_time / 1000 if run.info.start_time else None,
                       "model_version": run.data.params.get("model_version"),
                       "metrics": _interval_metrics(dict(run.data.metrics), candidate)})
    if not models:
        return Part(missing=f"model '{name}' has no champion yet: skewless train --promote")
    return Part(models)


def collect(settings: Settings, history: int = 48, now: datetime | None = None,
            on_step: Callable[[str], None] = lambda _: None) -> ReportInputs:
    """Everything the report shows, each section read on its own (a failure is its note)."""
    now = now or datetime.now(timezone.utc)
    inputs = ReportInputs(generated_at=now)
    on_step("reading the saved drift checks")
    inputs.drift = _guard(lambda: read_drift(settings, history), "the drift checks")
    if inputs.drift.data:
        run = inputs.drift.data["checks"][-1].get("reference_run")
        on_step("loading the drift reference from MLflow")
        inputs.reference = (_guard(lambda: read_reference(settings, run), "the drift reference") if run else
                            Part(missing="the newest drift check names no reference run"))
    else:
        inputs.reference = Part(missing="no drift check saved yet: run skewless monitor drift")
    on_step("counting dead letters")
    inputs.dead_letters = _guard(lambda: read_dead_letters(settings), "the dead letters")
    inputs.table_checks = _guard(lambda: read_table_checks(settings), "the feature-table checks")
    inputs.served = _guard(lambda: read_served(settings), "the served-consistency check")
    on_step("reading freshness")
    inputs.freshness = _guard(lambda: read_freshness(settings, now), "freshness")
    on_step("reading the champion and challenger from MLflow")
    inputs.models = _guard(lambda: read_models(settings), "the models")
    return inputs


def write_report(inputs: ReportInputs, out_dir: Path) -> dict[str, Any]:
    """Render ``inputs`` to ``out_dir/report.html`` (atomically); a summary."""
    from monitoring.report_html import render

    t0 = time.perf_counter()
    html = render(inputs)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    parts = {"distributions": inputs.drift, "score": inputs.drift, "drift-over-time": inputs.drift,
             "reference": inputs.reference, "dead-letters": inputs.dead_letters,
             "table-checks": inputs.table_checks, "served-consistency": inputs.served,
             "freshness": inputs.freshness, "models": inputs.models}
    return {"path": str(path.resolve()), "bytes": path.stat().st_size,
            "render_seconds": round(time.perf_counter() - t0, 3),
            "sections": {k: p.missing is None and p.data is not None for k, p in parts.items()},
            "missing": {k: p.missing for k, p in parts.items() if p.missing}}


def monitor_report(settings: Settings, out_dir: Path, history: int = 48, now: datetime | None = None,
                   on_step: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    t0 = time.perf_counter()
    inputs = collect(settings, history, now, on_step)
    on_step("drawing the report")
    out = write_report(inputs, out_dir)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    checks = (inputs.drift.data or {}).get("checks") or []
    out["drift_checks"] = len(checks)
    out["drifted"] = bool(checks and checks[-1].get("drifted"))
    return out


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


__all__ = ["Histogram", "Part", "ReportInputs", "collect", "monitor_report", "reason_group", "write_report"]
