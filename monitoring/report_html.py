"""Drawing the monitoring report (``monitoring.report``'s inputs) as one HTML page: inline
CSS, inline SVG charts (``monitoring.svg``), no script, no external resource. Every text
that comes from data is escaped.

Numeric distributions are drawn from the histograms alone: each histogram is read as
piecewise uniform within its bins (the model ``skewless.histograms`` already uses for
quantiles), and its mass re-binned on 40 display bins spanning 0.5%-99.5% of both samples
(log-spaced for skewed non-negative features: amounts, counts) — a few kB per feature
whatever the number of rows.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from html import escape
from typing import Any

import numpy as np

from monitoring import svg
from monitoring.report import Part, ReportInputs, finite
from skewless.histograms import SCORE, CategoricalHistogram, Histogram, NumericHistogram

DISPLAY_BINS = 40
MAX_CATEGORIES_SHOWN = 10

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#f6f7f9}
header{background:#1f2a44;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;font-size:13px;opacity:.85}
nav{background:#fff;border-bottom:1px solid #ddd;padding:6px 24px;font-size:13px;position:sticky;top:0}
nav a{margin-right:14px;color:#1f2a44;text-decoration:none}
main{padding:8px 24px 40px}section{background:#fff;border:1px solid #e2e2e2;border-radius:6px;margin:16px 0;padding:12px 16px}
h2{font-size:17px;margin:4px 0 10px}h3{font-size:14px;margin:6px 0}
.empty{color:#666;font-style:italic}.grid{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #e6e6e6;border-radius:5px;padding:8px;width:350px}.card.drift{border-color:#c62828}
.card p{margin:2px 0;font-size:12px;color:#444}
.badge{display:inline-block;border-radius:3px;padding:1px 6px;font-size:11px;color:#fff;background:#2e7d32}
.badge.bad{background:#c62828}.badge.na{background:#888}
table{border-collapse:collapse;font-size:12px;margin:6px 0}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child,td.t{text-align:left}th{background:#fafafa}
.tiles{display:flex;flex-wrap:wrap;gap:10px}.tile{border:1px solid #e2e2e2;border-radius:5px;padding:8px 12px;min-width:170px}
.tile b{display:block;font-size:18px}.tile span{font-size:12px;color:#555}
.legend{font-size:12px;color:#444}.legend i{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}
.small{font-size:12px;color:#555}
"""


def _when(ts: Any) -> str:
    if isinstance(ts, str):
        try:
            ts = datetime.fromisoformat(ts).timestamp()
        except ValueError:
            return escape(ts)
    if not finite(ts):
        return "-"
    return datetime.fromtimestamp(float(ts), timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _age(seconds: float | None) -> str:
    if seconds is None or not finite(seconds):
        return "-"
    s = abs(seconds)
    text = f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h" if s < 172800 \
        else f"{s / 86400:.1f} d"
    return text if seconds >= 0 else f"in {text}"


def _badge(ok: bool | None, good: str = "ok", bad: str = "DRIFT") -> str:
    if ok is None:
        return '<span class="badge na">n/a</span>'
    return f'<span class="badge">{good}</span>' if ok else f'<span class="badge bad">{bad}</span>'


def _empty(part: Part | None, what: str) -> str:
    reason = part.missing if part is not None and part.missing else "no data"
    return f'<p class="empty">No {escape(what)}: {escape(reason)}.</p>'


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{escape(title)}</h2>{body}</section>'


_NUMERIC = re.compile(r"^[-+]?[\d,.]+(e[-+]?\d+)?( ?[%a-z]{0,3})?( \[.*\])?$")


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" if _NUMERIC.match(c) else f'<td class="t">{c}</td>' for c in r)
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


# -- distributions --------------------------------------------------------------------------------

def display_numeric(ref: NumericHistogram, live: NumericHistogram | None,
                    bins: int = DISPLAY_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, bool]:
    """Display edges, the densities of both samples on them, and whether the axis is log1p."""
    hs = [h for h in (ref, live) if h is not None and h.n_values]
    if not hs:
        return np.array([0.0, 1.0]), np.zeros(1), None if live is None else np.zeros(1), False
    lo = min(float(h.quantile(0.005)) for h in hs)
    hi = max(float(h.quantile(0.995)) for h in hs)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    median = float(hs[0].quantile(0.5))
    log_x = lo >= 0 and hi > 8 * max(median, 1e-9) and hi > 10
    if log_x:
        edges = np.expm1(np.linspace(math.log1p(lo), math.log1p(hi), bins + 1))
        widths = np.diff(np.log1p(edges))
    else:
        edges = np.linspace(lo, hi, bins + 1)
        widths = np.diff(edges)

    def density(h: NumericHistogram | None) -> np.ndarray | None:
        if h is None:
            return None
        if not h.n_values:
            return np.zeros(bins)
        cdf = np.concatenate([[0.0], np.cumsum(h.counts) / h.n_values])
        knots = h.knots()
        # knots may repeat (a closed outer bin of zero width): keep them increasing for interp
        knots = np.maximum.accumulate(knots + np.arange(len(knots)) * 1e-12 * max(1.0, abs(knots).max()))
        return np.diff(np.interp(edges, knots, cdf)) / widths

    return edges, density(ref), density(live), log_x


def display_categories(ref: CategoricalHistogram, live: CategoricalHistogram | None,
                       k: int = MAX_CATEGORIES_SHOWN) -> tuple[list[str], list[float], list[float] | None]:
    """The categories with the largest share on either side (the rest as "other"), shares
    of the non-missing values."""
    rs = ref.shares()
    ls = live.shares() if live is not None else {}
    names = sorted(set(rs) | set(ls), key=lambda c: -max(rs.get(c, 0.0), ls.get(c, 0.0)))
    shown = names[:k]
    rest = names[k:]
    r = [rs.get(c, 0.0) for c in shown]
    lv = [ls.get(c, 0.0) for c in shown] if live is not None else None
    r_other = sum(rs.get(c, 0.0) for c in rest) + (ref.other / ref.n_values if ref.n_values else 0.0)
    l_other = (sum(ls.get(c, 0.0) for c in rest) + (live.other / live.n_values if live.n_values else 0.0)
               if live is not None else 0.0)
    if r_other > 0 or l_other > 0:
        shown.append("(other)")
        r.append(r_other)
        if lv is not None:
            lv.append(l_other)
    return shown, r, lv


def distribution_chart(name: str, ref: Histogram, live: Histogram | None, width: int = 340,
                       height: int = 150) -> str:
    if isinstance(ref, NumericHistogram):
        edges, dr, dl, log_x = display_numeric(ref, live if isinstance(live, NumericHistogram) else None)
        return svg.density_overlay(edges.tolist(), dr.tolist(), None if dl is None else dl.tolist(),
                                   f"{name}: reference vs live" + (" (log axis)" if log_x else ""),
                                   log_x=log_x, width=width, height=height)
    names, r, lv = display_categories(ref, live if isinstance(live, CategoricalHistogram) else None)
    return svg.category_bars(names, r, lv, f"{name}: category shares, reference vs live", width=width)


def _signal_line(f: dict[str, Any]) -> str:
    parts = []
    for s in f.get("signals", []):
        label = {"wasserstein_norm": "W1/σ", "js_distance": "JS", "missing_rate_diff": "Δ missing"}.get(
            s.get("statistic"), s.get("statistic", "?"))
        p = s.get("p_adjusted") if s.get("p_value") is not None else None
        parts.append(f"{escape(label)} {svg.num(s.get('value'))} (thr {svg.num(s.get('threshold'))}"
                     f"{', p ' + svg.num(p) if p is not None else ''})")
    if f.get("psi") is not None:
        parts.append(f"PSI {svg.num(f['psi'])}")
    return "; ".join(parts)


def _card(f: dict[str, Any], ref: Histogram | None, live: Histogram | None, wide: bool = False) -> str:
    name = str(f.get("name"))
    drifted = bool(f.get("drifted"))
    chart = distribution_chart(name, ref, live, width=520 if wide else 340, height=190 if wide else 150) \
        if ref is not None else '<p class="empty">no reference histogram for this feature</p>'
    d = f.get("details") or {}
    extra = ""
    if f.get("kind") == "numeric" and d:
        extra = (f"<p>mean {svg.num(d.get('mean_reference'))} → {svg.num(d.get('mean_live'))}; "
                 f"sd {svg.num(d.get('std_reference'))} → {svg.num(d.get('std_live'))}</p>")
    elif d.get("new_categories"):
        extra = f"<p>new categories: {escape(', '.join(map(str, d['new_categories'][:5])))}</p>"
    return (f'<div class="card feature{" drift" if drifted else ""}" data-feature="{escape(name)}" '
            f'style="{"width:540px" if wide else ""}"><h3>{escape(name)} {_badge(not drifted)}</h3>{chart}'
            f"<p>{_signal_line(f)}</p><p>missing {svg.num(_pct(f.get('missing_rate_reference')))}% → "
            f"{svg.num(_pct(f.get('missing_rate_live')))}%; n {svg.num(f.get('n_reference'))} → "
            f"{svg.num(f.get('n_live'))}</p>{extra}</div>")


def _pct(x: Any) -> float | None:
    return 100 * x if finite(x) else None


def _ratio(f: dict[str, Any]) -> float:
    """How far past its threshold a feature's strongest signal is."""
    best = 0.0
    for s in f.get("signals", []):
        if finite(s.get("value")) and finite(s.get("threshold")) and s["threshold"] > 0:
            best = max(best, abs(s["value"]) / s["threshold"])
    return best


LEGEND = ('<p class="legend"><i style="background:#3b6fb6;opacity:.5"></i>reference (training set)'
          '<i style="background:#e07b24"></i>live</p>')


def distributions(inputs: ReportInputs) -> str:
    if not inputs.drift.data:
        return _empty(inputs.drift, "live distributions")
    check = inputs.drift.data["checks"][-1]
    ref = (inputs.reference.data or {}).get("histograms") or {}
    live = inputs.drift.data.get("live") or {}
    feats = [f for f in check.get("features", []) if f.get("name") != SCORE]
    feats.sort(key=lambda f: (not f.get("drifted"), -_ratio(f)))
    head = (f'<p class="small">Newest drift check: {check.get("predictions", 0):,} predictions of model version '
            f'{escape(str(check.get("model_version")))} from {_when((check.get("window") or {}).get("start"))} to '
            f'{_when((check.get("window") or {}).get("end"))}, against run {escape(str(check.get("reference_run")))}; '
            f'{check.get("tests", "?")} tests, Holm at alpha {check.get("alpha", "?")}. Drifted features first.</p>')
    note = "" if ref else _empty(inputs.reference, "reference histograms (live only)")
    cards = "".join(_card(f, ref.get(f["name"]), live.get(f["name"])) for f in feats)
    return head + note + LEGEND + f'<div class="grid">{cards}</div>'


def score(inputs: ReportInputs) -> str:
    if not inputs.drift.data:
        return _empty(inputs.drift, "score distribution")
    check = inputs.drift.data["checks"][-1]
    f = next((f for f in check.get("features", []) if f.get("name") == SCORE), None)
    if f is None:
        return '<p class="empty">No score distribution: the reference holds no score histogram.</p>'
    ref = ((inputs.reference.data or {}).get("histograms") or {}).get(SCORE)
    live = (inputs.drift.data.get("live") or {}).get(SCORE)
    return ('<p class="small">The model\'s scores on its held-out test rows (reference) against its live scores.</p>'
            + LEGEND + _card(f, ref, live, wide=True))


def drift_over_time(inputs: ReportInputs) -> str:
    if not inputs.drift.data:
        return _empty(inputs.drift, "drift history")
    checks = inputs.drift.data["checks"]
    labels = [datetime.fromisoformat(c["window"]["end"]).strftime("%m-%d %H:%M") if c.get("window") else "?"
              for c in checks]
    names: list[str] = []
    for c in checks:
        for f in c.get("features", []):
            if f.get("name") not in names:
                names.append(f["name"])
    names.sort(key=lambda n: (n == SCORE, n))
    values, flagged, notes = [], [], []
    for n in names:
        row_v, row_f, row_n = [], [], []
        for c, label in zip(checks, labels):
            f = next((f for f in c.get("features", []) if f.get("name") == n), None)
            if f is None:
                row_v.append(None)
                row_f.append(False)
                row_n.append(f"{n} @ {label}: not checked")
                continue
            row_v.append(_ratio(f))
            row_f.append(bool(f.get("drifted")))
            row_n.append(f"{n} @ {label}: {_signal_line(f)}{' — DRIFT' if f.get('drifted') else ''}")
        values.append(row_v)
        flagged.append(row_f)
        notes.append(row_n)
    heat = svg.heatmap(names, labels, values, flagged, notes, "drift over time: statistic / threshold per feature")
    score_series = []
    for c in checks:
        f = next((f for f in c.get("features", []) if f.get("name") == SCORE), None)
        dist = next((s for s in (f or {}).get("signals", []) if s.get("signal") == "distribution"), None)
        score_series.append(dist.get("value") if dist else None)
    threshold = next((s.get("threshold") for c in checks for f in c.get("features", []) if f.get("name") == SCORE
                      for s in f.get("signals", []) if s.get("signal") == "distribution"), None)
    line = svg.line_chart(labels, {"score W1/σ": score_series}, "drift over time: the score's distance from its "
                          "reference", threshold=threshold, y_label="score: W1 in robust σ (dashed: threshold)")
    rows = [[escape(labels[i]), f"{c.get('predictions', 0):,}", _badge(not c.get("drifted")),
             escape(", ".join(c.get("drifted_features") or []) or "-")] for i, c in enumerate(checks)][::-1][:12]
    return (f'<p class="small">{len(checks)} saved checks (window end, UTC). Cell colour: the strongest signal as a '
            f'share of its threshold (white 0, red 1.5 or more); red outline: drifted (material and significant). '
            f'Hover a cell for its figures.</p><div>{heat}</div><div>{line}</div>'
            + _table(["window end", "predictions", "verdict", "drifted features"], rows))


# -- data quality, served consistency, freshness, models -----------------------------------------

def data_quality(inputs: ReportInputs) -> str:
    out = ["<h3>Dead letters by reason</h3>"]
    dl = inputs.dead_letters
    if not dl.data:
        out.append(_empty(dl, "dead-letter counts"))
    else:
        rows = []
        for topic, t in dl.data.items():
            total = t["valid"] + t["dead"]
            rows.append([escape(topic), f"{t['valid']:,}", f"{t['dead']:,}",
                         f"{100 * t['dead'] / total:.3g}%" if total else "-"])
        out.append(_table(["topic", "valid rows", "dead letters", "share dead"], rows))
        for topic, t in dl.data.items():
            if not t["reasons"]:
                continue
            items = list(t["reasons"].items())[:15]
            out.append(f'<p class="small">{escape(topic)}: {len(t["reasons"])} reasons</p>')
            out.append(svg.hbars([g for g, _ in items], [float(n) for g, (n, _) in items],
                                 f"{topic}: dead letters by reason", colour=svg.BAD))
            out.append(_table(["reason", "dead letters", "example"],
                              [[escape(g), f"{n:,}", escape(ex[:140])] for g, (n, ex) in items]))
        if all(t["dead"] == 0 for t in dl.data.values()):
            out.append('<p class="small">No dead letters: every landed event passed the contract and the checks.</p>')
    out.append("<h3>Feature-table checks (newest ETL run)</h3>")
    tc = inputs.table_checks
    if not tc.data:
        out.append(_empty(tc, "feature-table check report"))
    else:
        views = tc.data.get("views") or {}
        rows = []
        for view, q in views.items():
            failed = q.get("failed") or []
            rows.append([escape(view), str(q.get("checks", "-")), _badge(not failed, "pass", "FAIL"),
                         escape("; ".join(f"{f.get('check')} ({f.get('count')})" for f in failed) or "-")])
        out.append(f'<p class="small">{escape(tc.data.get("file", ""))}: output dates {escape(str(tc.data.get("start")))}'
                   f' to {escape(str(tc.data.get("end")))}</p>' + _table(["view", "checks", "result", "failed"], rows))
    return "".join(out)


def served_consistency(inputs: ReportInputs) -> str:
    part = inputs.served
    if not part.data:
        return _empty(part, "served-consistency figures")
    r = part.data
    t = r.get("totals") or {}
    bad = sum(int(t.get(k) or 0) for k in ("mismatches", "missing", "extra"))
    head = (f'<p>{_badge(bad == 0, "0 mismatches", f"{bad:,} differ")} {t.get("compared", 0):,} served values of '
            f'{r.get("compared_predictions", 0):,} predictions compared with the offline point-in-time values at '
            f'{escape(str(r.get("at")))} (checked {_when(r.get("checked_at"))}); {r.get("not_yet_covered", 0):,} '
            f'predictions not yet covered by the batch job.</p>')
    feats = r.get("features") or {}
    differing = {n: sum(int(c.get(k) or 0) for k in ("mismatches", "missing", "extra")) for n, c in feats.items()}
    differing = {n: v for n, v in sorted(differing.items(), key=lambda kv: -kv[1]) if v}
    chart = svg.hbars(list(differing), [float(v) for v in differing.values()],
                      "served consistency: values differing from offline, per feature", colour=svg.BAD) \
        if differing else ""
    rows = [[escape(n), f"{c.get('compared', 0):,}", f"{c.get('matches', 0):,}", f"{c.get('mismatches', 0):,}",
             f"{c.get('missing', 0):,}", f"{c.get('extra', 0):,}", svg.num(c.get("smape_pct"))]
            for n, c in feats.items()]
    return head + chart + _table(["feature", "compared", "matches", "mismatches", "missing", "extra", "SMAPE %"], rows)


def freshness(inputs: ReportInputs) -> str:
    part = inputs.freshness
    if not part.data:
        return _empty(part, "freshness figures")
    d = part.data
    now = d["now"]
    out = []
    stream: Part = d["stream"]
    if stream.data:
        s = stream.data
        names = sorted(s["newest"])
        ages = [max(now - s["newest"][v], 0.0) for v in names]
        out.append(f'<h3>Streaming job</h3><p class="small">last micro-batch {s.get("batch")} applied '
                   f'{_age(now - s["applied_at"]) if finite(s.get("applied_at")) else "-"} ago; lag '
                   f'{svg.num(s.get("lag"))} records; {svg.num(s.get("events"))} events applied.</p>')
        if names:
            out.append(svg.hbars(names, [a / 60 for a in ages], "age of the newest event applied per view",
                                 unit=" min", colour=svg.LIVE))
    else:
        out.append("<h3>Streaming job</h3>" + _empty(stream, "stream status"))
    wm: Part = d["watermark"]
    if wm.data:
        names = list(wm.data)
        out.append("<h3>Online store</h3>" + svg.hbars(
            names, [max(now - m["until"], 0.0) / 3600 for m in wm.data.values()],
            "online store: loaded up to, hours before now", unit=" h"))
        out.append(_table(["view", "loaded up to", "written", "by", "keys"], [
            [escape(v), _when(m["until"]), _when(m["written_at"]), escape(str(m["writer"])), f"{m['keys']:,}"]
            for v, m in wm.data.items()]))
    else:
        out.append("<h3>Online store</h3>" + _empty(wm, "online-store watermark"))
    etl: Part = d["etl"]
    if etl.data:
        e = etl.data
        rng = e.get("range") or ["?", "?"]
        out.append(f'<h3>Batch ETL</h3><p class="small">last incremental run started {_when(e.get("started_at"))} '
                   f'({_age(now - e["started_at"]) if finite(e.get("started_at")) else "-"} ago), output dates '
                   f'{escape(str(rng[0]))} to {escape(str(rng[-1]))}.</p>')
    else:
        out.append("<h3>Batch ETL</h3>" + _empty(etl, "ETL run"))
    return "".join(out)


METRIC_ORDER = ("pr_auc", "roc_auc", "cost", "savings")


def models(inputs: ReportInputs) -> str:
    part = inputs.models
    if not part.data:
        return _empty(part, "models")
    ms = part.data
    labels = [f"{m['alias']} v{m['version']}" for m in ms]
    names: list[str] = [n for n in METRIC_ORDER if any(n in m["metrics"] for m in ms)]
    names += sorted(n for m in ms for n in m["metrics"] if n.startswith("recall_at") and n not in names)[:1]
    any_ci = any(m["metrics"].get(n, [None, None, None])[1] is not None for m in ms for n in names)
    note = ""
    if len(ms) == 1:
        note = (f'<p class="small">No challenger yet (registry alias "challenger"): the champion alone is shown. '
                f'Retraining registers one.</p>')
    if not any_ci:
        note += '<p class="small">No bootstrap intervals recorded in these runs: points only.</p>'
    pts = [[tuple(m["metrics"].get(n, [None, None, None])) for m in ms] for n in names]
    chart = svg.intervals(names, labels, pts, "test metrics")
    rows = []
    for m, label in zip(ms, labels):
        cells = [escape(label), escape(m.get("candidate") or "-"), _when(m.get("trained_at"))]
        for n in names:
            v, lo, hi = m["metrics"].get(n, [None, None, None])
            cells.append(svg.num(v, ".4g") + (f" [{svg.num(lo, '.4g')}, {svg.num(hi, '.4g')}]"
                                             if lo is not None and hi is not None else ""))
        rows.append(cells)
    return (note + '<p class="small">Metrics on each model\'s test split (cost: expected cost of its decisions at '
            'its threshold).</p>' + f'<div class="grid">{chart}</div>'
            + _table(["model", "candidate", "trained", *names], rows))


def overview(inputs: ReportInputs) -> str:
    tiles = []

    def tile(value: str, label: str) -> None:
        tiles.append(f'<div class="tile"><b>{value}</b><span>{escape(label)}</span></div>')

    if inputs.drift.data:
        c = inputs.drift.data["checks"][-1]
        n = len(c.get("drifted_features") or [])
        tile('<span style="color:#c62828">DRIFT</span>' if c.get("drifted") else '<span style="color:#2e7d32">no drift</span>',
             f"newest drift check ({n} feature{'s' * (n != 1)} drifted)")
        tile(f"{c.get('predictions', 0):,}", "predictions in its window")
    else:
        tile("-", "no drift check yet")
    if inputs.dead_letters.data:
        tile(f"{sum(t['dead'] for t in inputs.dead_letters.data.values()):,}", "dead letters in the lake")
    if inputs.served.data:
        t = inputs.served.data.get("totals") or {}
        bad = sum(int(t.get(k) or 0) for k in ("mismatches", "missing", "extra"))
        tile(f"{bad:,}", "served values differing from offline")
    if inputs.models.data:
        champ = inputs.models.data[0]
        pr = champ["metrics"].get("pr_auc", [None])[0]
        tile(svg.num(pr, ".3f"), f"champion v{champ['version']} test PR-AUC")
    return f'<div class="tiles">{"".join(tiles)}</div>'


def render(inputs: ReportInputs) -> str:
    sections = [("overview", "Overview", overview), ("distributions", "Feature distributions: reference vs live",
                                                      distributions),
                ("score", "Score distribution", score), ("drift-over-time", "Drift over time", drift_over_time),
                ("data-quality", "Data quality", data_quality),
                ("served-consistency", "Consistency as served", served_consistency),
                ("freshness", "Freshness", freshness), ("models", "Champion and challenger", models)]
    body = []
    for sid, title, draw in sections:
        try:
            html = draw(inputs)
        except Exception as exc:  # a section that cannot be drawn says so; the page still renders
            html = f'<p class="empty">This section could not be drawn: {escape(type(exc).__name__)}: ' \
                   f'{escape(str(exc)[:200])}.</p>'
        body.append(_section(sid, title, html))
    nav = "".join(f'<a href="#{sid}">{escape(title.split(":")[0])}</a>' for sid, title, _ in sections)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{escape(inputs.title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{escape(inputs.title)}</h1><p>generated {_when(inputs.generated_at.timestamp())} "
            f"from binned histograms and saved check results: no raw rows</p></header><nav>{nav}</nav>"
            f"<main>{''.join(body)}</main></body></html>")
