"""The monitoring report opened in a real browser: Debian's headless Chromium (installed by
``scripts/setup.sh``), driven by Playwright for Python with that executable. The page must
render with no console error and no request beyond the file itself, hold every section,
and every chart must be laid out with a visible size.

Without Chromium the tests skip, naming the install command — except in CI (``CI`` set),
where setup.sh installs it, so its absence fails.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from monitoring.report import SECTIONS, ReportInputs, write_report
from monitoring.report_synthetic import synthetic_inputs

INSTALL = "apt-get install -y chromium (scripts/setup.sh does it when run as root) and pip install playwright"


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"Chromium or Playwright is missing in CI: {INSTALL}")
        pytest.skip(f"Chromium or Playwright is not installed: {INSTALL}")
    return path


def _open(report: Path, screenshot: Path | None = None) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            messages, errors, requests = [], [], []
            page.on("console", lambda m: messages.append((m.type, m.text)))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.as_uri(), wait_until="load")
            charts = page.eval_on_selector_all(
                "svg.chart", "els => els.map(e => { const r = e.getBoundingClientRect();"
                             " return [r.width, r.height, e.querySelectorAll('rect,polyline,polygon,circle,line').length]; })")
            sections = page.eval_on_selector_all("section", "els => els.map(e => e.id)")
            cards = page.eval_on_selector_all("#distributions .card.feature", "els => els.length")
            empty = page.eval_on_selector_all("p.empty", "els => els.map(e => e.closest('section').id)")
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return {"messages": messages, "errors": errors, "requests": requests, "charts": charts, "sections": sections,
            "cards": cards, "empty": empty}


@pytest.fixture(scope="module")
def synthetic() -> ReportInputs:
    return synthetic_inputs(predictions=30_000, features=25, windows=6, reference_rows=20_000)


def test_full_report_renders_in_chromium(synthetic, tmp_path):
    out = write_report(synthetic, tmp_path)
    shot = tmp_path / "report.png"
    seen = _open(Path(out["path"]), shot)
    assert seen["errors"] == []
    assert [m for m in seen["messages"] if m[0] in ("error", "warning")] == []
    assert seen["requests"] == [Path(out["path"]).as_uri()]  # the page itself, nothing else
    assert seen["sections"] == list(SECTIONS)
    assert seen["empty"] == []  # every section drawn
    assert seen["cards"] == 25  # one per model feature
    assert len(seen["charts"]) >= 25 + 1 + 2 + 1 + 1 + 4  # features, score, drift over time, quality, served, models
    for width, height, marks in seen["charts"]:
        assert width > 50 and height > 20 and marks > 0
    assert shot.stat().st_size > 50_000  # a picture, not a blank page


def test_empty_report_renders_in_chromium(tmp_path):
    from datetime import datetime, timezone

    out = write_report(ReportInputs(generated_at=datetime.now(timezone.utc)), tmp_path)
    seen = _open(Path(out["path"]))
    assert seen["errors"] == [] and [m for m in seen["messages"] if m[0] == "error"] == []
    assert seen["sections"] == list(SECTIONS)
    assert sorted(set(seen["empty"])) == sorted(SECTIONS[1:])  # each data section says it has none
    assert seen["charts"] == []
