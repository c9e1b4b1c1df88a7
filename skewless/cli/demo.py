"""``skewless demo``: the whole lifecycle built so far, end to end."""

from __future__ import annotations

from skewless.cli.common import ConfigOpt, JsonOpt, VerboseOpt, emit, handle_errors, settings_from


@handle_errors
def demo(config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Run every stage on simulated data: services, produce, consume, verify, ..."""
    from skewless.demo_pipeline import run_demo

    settings = settings_from(config)
    summary = run_demo(settings)
    emit(summary, json_out)
