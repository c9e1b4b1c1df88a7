"""Small inline SVG charts for the monitoring report, drawn here from binned figures: no
JavaScript, no chart library, no raw rows. Each function returns one ``<svg>`` element as
text (a few kB), with a ``<title>`` per mark so hovering a bar or a cell shows its figures.

Colours: the reference (training set) is blue, live traffic orange, a flagged value red.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

REF = "#3b6fb6"
LIVE = "#e07b24"
BAD = "#c62828"
GOOD = "#2e7d32"
GRID = "#ddd"
INK = "#333"
FONT = 'font-family="system-ui,sans-serif" font-size="10"'


def num(x: float | None, spec: str = ".3g") -> str:
    """A figure for people: ``-`` when absent, compact otherwise."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, int) or (abs(x) >= 1000 and float(x).is_integer()):
        return f"{int(x):,}"
    return format(x, spec)


def _f(x: float) -> str:
    """A coordinate, short."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" {FONT}><title>{escape(label)}</title>{"".join(body)}</svg>')


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About ``n`` round tick values in ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def density_overlay(edges: Sequence[float], reference: Sequence[float], live: Sequence[float] | None,
                    label: str, log_x: bool = False, width: int = 340, height: int = 150) -> str:
    """Two step curves (reference, live) of densities over the display bins ``edges``;
    ``log_x``: the edges are spaced in log(1 + x) and the axis is labelled in x."""
    left, right, top, bottom = 34, 8, 6, 20
    pw, ph = width - left - right, height - top - bottom
    ymax = max([*reference, *(live or []), 0.0]) or 1.0
    tx = (lambda v: math.log1p(max(v, 0.0))) if log_x else (lambda v: v)
    x0, x1 = tx(edges[0]), tx(edges[-1])
    span = (x1 - x0) or 1.0

    def px(v: float) -> float:
        return left + (tx(v) - x0) / span * pw

    def py(d: float) -> float:
        return top + ph - d / ymax * ph

    def steps(dens: Sequence[float]) -> str:
        pts = [f"{_f(px(edges[0]))},{_f(py(0))}"]
        for i, d in enumerate(dens):
            pts.append(f"{_f(px(edges[i]))},{_f(py(d))}")
            pts.append(f"{_f(px(edges[i + 1]))},{_f(py(d))}")
        pts.append(f"{_f(px(edges[-1]))},{_f(py(0))}")
        return " ".join(pts)

    body = [f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="{INK}"/>']
    if log_x:
        ticks = [t for t in (0, 1, 3, 10, 30, 100, 300, 1e3, 3e3, 1e4, 3e4, 1e5, 1e6) if edges[0] <= t <= edges[-1]]
        if len(ticks) > 5:
            ticks = ticks[::2]
    else:
        ticks = _ticks(edges[0], edges[-1])
    for t in ticks:
        x = px(t)
        body.append(f'<line x1="{_f(x)}" y1="{top + ph}" x2="{_f(x)}" y2="{top + ph + 3}" stroke="{INK}"/>'
                    f'<text x="{_f(x)}" y="{height - 6}" text-anchor="middle">{num(t)}</text>')
    body.append(f'<polygon class="ref" points="{steps(reference)}" fill="{REF}" fill-opacity="0.25" stroke="{REF}">'
                f'<title>reference (training set)</title></polygon>')
    if live is not None:
        body.append(f'<polyline class="live" points="{steps(live)}" fill="none" stroke="{LIVE}" stroke-width="1.6">'
                    f'<title>live</title></polyline>')
    body.append(f'<text x="{left + pw}" y="{top + 8}" text-anchor="end" fill="#666">density{" (log axis)" if log_x else ""}</text>')
    return _svg(width, height, body, label)


def category_bars(names: Sequence[str], reference: Sequence[float], live: Sequence[float] | None, label: str,
                  width: int = 340, bar_h: int = 9) -> str:
    """Grouped horizontal bars of shares per category (reference above live)."""
    left, right, top = 92, 40, 4
    rows = len(names)
    height = top + rows * (2 * bar_h + 5) + 4
    pw = width - left - right
    smax = max([*reference, *(live or []), 0.0]) or 1.0
    body = []
    for i, name in enumerate(names):
        y = top + i * (2 * bar_h + 5)
        short = name if len(name) <= 14 else name[:13] + "…"
        body.append(f'<text x="{left - 4}" y="{y + bar_h + 3}" text-anchor="end">{escape(short)}</text>')
        for j, (shares, colour, who) in enumerate(((reference, REF, "reference"), (live, LIVE, "live"))):
            if shares is None:
                continue
            w = shares[i] / smax * pw
            yy = y + j * bar_h
            body.append(f'<rect class="{"ref" if j == 0 else "live"}" x="{left}" y="{yy}" width="{_f(max(w, 0.5))}" '
                        f'height="{bar_h - 1}" fill="{colour}"><title>{escape(name)}: {who} '
                        f'{shares[i]:.1%}</title></rect>')
            body.append(f'<text x="{_f(left + w + 3)}" y="{yy + bar_h - 1}">{shares[i]:.1%}</text>')
    return _svg(width, height, body, label)


def heatmap(rows: Sequence[str], columns: Sequence[str], values: Sequence[Sequence[float | None]],
            flagged: Sequence[Sequence[bool]], notes: Sequence[Sequence[str]], label: str, cell: int = 14) -> str:
    """A grid of cells coloured by ``value`` (a ratio to the threshold: 0 white, >= 1 full
    colour), flagged cells outlined; ``notes`` are each cell's tooltip."""
    left, top = 190, 4
    bottom = 56
    width = left + max(len(columns), 1) * cell + 10
    height = top + len(rows) * cell + bottom
    body = []
    for i, name in enumerate(rows):
        y = top + i * cell
        short = name if len(name) <= 32 else name[:31] + "…"
        body.append(f'<text x="{left - 4}" y="{y + cell - 4}" text-anchor="end">{escape(short)}</text>')
        for j in range(len(columns)):
            v = values[i][j]
            x = left + j * cell
            if v is None or (isinstance(v, float) and math.isnan(v)):
                fill = "#f2f2f2"
            else:
                t = max(0.0, min(float(v), 1.5)) / 1.5
                # white -> amber -> red as the value nears and passes its threshold
                r, g, b = (255, int(255 - 120 * t), int(255 - 230 * t))
                fill = f"#{r:02x}{max(g, 0):02x}{max(b, 0):02x}"
            stroke = f' stroke="{BAD}" stroke-width="2"' if flagged[i][j] else f' stroke="#fff"'
            body.append(f'<rect class="cell" x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}"{stroke}>'
                        f'<title>{escape(notes[i][j])}</title></rect>')
    step = max(1, math.ceil(len(columns) * cell / 200))
    for j in range(0, len(columns), step):
        x = left + j * cell + cell / 2
        y = top + len(rows) * cell + 6
        body.append(f'<text x="{_f(x)}" y="{y}" transform="rotate(60 {_f(x)} {y})">{escape(columns[j])}</text>')
    return _svg(width, height, body, label)


def line_chart(xs: Sequence[str], series: dict[str, Sequence[float | None]], label: str,
               threshold: float | None = None, width: int = 520, height: int = 170,
               y_label: str = "") -> str:
    """Lines over ordered x labels (checks in time order); an optional dashed threshold."""
    left, right, top, bottom = 40, 110, 8, 40
    pw, ph = width - left - right, height - top - bottom
    finite = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    ymax = max([*finite, threshold or 0.0, 1e-9]) * 1.1
    n = max(len(xs), 1)

    def px(i: int) -> float:
        return left + (i + 0.5) / n * pw

    def py(v: float) -> float:
        return top + ph - v / ymax * ph

    body = [f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="{INK}"/>',
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="{INK}"/>']
    for t in _ticks(0, ymax, 3):
        body.append(f'<line x1="{left}" y1="{_f(py(t))}" x2="{left + pw}" y2="{_f(py(t))}" stroke="{GRID}"/>'
                    f'<text x="{left - 3}" y="{_f(py(t) + 3)}" text-anchor="end">{num(t)}</text>')
    if threshold is not None:
        body.append(f'<line x1="{left}" y1="{_f(py(threshold))}" x2="{left + pw}" y2="{_f(py(threshold))}" '
                    f'stroke="{BAD}" stroke-dasharray="4 3"><title>threshold {num(threshold)}</title></line>')
    palette = [LIVE, REF, GOOD, "#7b1fa2", "#00838f", "#6d4c41"]
    for k, (name, values) in enumerate(series.items()):
        colour = palette[k % len(palette)]
        pts = [f"{_f(px(i))},{_f(py(v))}" for i, v in enumerate(values) if v is not None and math.isfinite(v)]
        if pts:
            body.append(f'<polyline class="series" points="{" ".join(pts)}" fill="none" stroke="{colour}" '
                        f'stroke-width="1.6"><title>{escape(name)}</title></polyline>')
            for i, v in enumerate(values):
                if v is not None and math.isfinite(v):
                    body.append(f'<circle cx="{_f(px(i))}" cy="{_f(py(v))}" r="2.2" fill="{colour}">'
                                f'<title>{escape(name)} {escape(xs[i])}: {num(v)}</title></circle>')
        body.append(f'<text x="{left + pw + 6}" y="{top + 10 + 12 * k}" fill="{colour}">{escape(name[:18])}</text>')
    step = max(1, math.ceil(len(xs) / 8))
    for i in range(0, len(xs), step):
        body.append(f'<text x="{_f(px(i))}" y="{top + ph + 14}" text-anchor="middle">{escape(xs[i])}</text>')
    if y_label:
        body.append(f'<text x="{left + 2}" y="{top + 8}">{escape(y_label)}</text>')
    return _svg(width, height, body, label)


def hbars(names: Sequence[str], values: Sequence[float], label: str, colour: str = REF,
          unit: str = "", width: int = 520, bar_h: int = 14) -> str:
    """Horizontal bars with their value at the end (counts, ages)."""
    left, right, top = 230, 70, 4
    height = top + len(names) * (bar_h + 4) + 4
    pw = width - left - right
    vmax = max([*values, 0.0]) or 1.0
    body = []
    for i, (name, v) in enumerate(zip(names, values)):
        y = top + i * (bar_h + 4)
        short = name if len(name) <= 40 else name[:39] + "…"
        w = max(v / vmax * pw, 0.5)
        body.append(f'<text x="{left - 4}" y="{y + bar_h - 3}" text-anchor="end">{escape(short)}</text>'
                    f'<rect class="bar" x="{left}" y="{y}" width="{_f(w)}" height="{bar_h}" fill="{colour}">'
                    f'<title>{escape(name)}: {num(v)}{escape(unit)}</title></rect>'
                    f'<text x="{_f(left + w + 4)}" y="{y + bar_h - 3}">{num(v)}{escape(unit)}</text>')
    return _svg(width, height, body, label)


def intervals(metrics: Sequence[str], models: Sequence[str],
              points: Sequence[Sequence[tuple[float | None, float | None, float | None]]], label: str,
              width: int = 260, row_h: int = 16) -> str:
    """One small dot-and-whisker panel per metric: each model's value and, where present,
    its interval ``(value, low, high)``. ``points[m][k]``: metric m, model k."""
    panels = []
    colours = [REF, LIVE, GOOD]
    for m, metric in enumerate(metrics):
        vals = [v for trip in points[m] for v in trip if v is not None and math.isfinite(v)]
        if not vals:
            continue
        lo, hi = min(vals), max(vals)
        pad = (hi - lo) * 0.15 or abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
        left, right, top = 80, 50, 16
        pw = width - left - right
        height = top + len(models) * row_h + 6
        body = [f'<text x="2" y="11" font-weight="bold">{escape(metric)}</text>']

        def px(v: float) -> float:
            return left + (v - lo) / (hi - lo) * pw

        for k, model in enumerate(models):
            value, low, high = points[m][k]
            y = top + k * row_h + row_h / 2
            body.append(f'<text x="{left - 4}" y="{_f(y + 3)}" text-anchor="end">{escape(model)}</text>')
            if value is None or not math.isfinite(value):
                body.append(f'<text x="{left}" y="{_f(y + 3)}">-</text>')
                continue
            c = colours[k % len(colours)]
            tip = f"{model} {metric}: {num(value, '.4g')}"
            if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
                tip += f" [{num(low, '.4g')}, {num(high, '.4g')}]"
                body.append(f'<line class="ci" x1="{_f(px(low))}" y1="{_f(y)}" x2="{_f(px(high))}" y2="{_f(y)}" '
                            f'stroke="{c}" stroke-width="2"/>')
            body.append(f'<circle cx="{_f(px(value))}" cy="{_f(y)}" r="3.5" fill="{c}"><title>{escape(tip)}</title>'
                        f'</circle><text x="{left + pw + 4}" y="{_f(y + 3)}">{num(value, ".4g")}</text>')
        panels.append(_svg(width, height, body, f"{label}: {metric}"))
    return "".join(panels)
