"""``skewless serve``: the online API (features and predictions) under uvicorn."""

from __future__ import annotations

import os
import tempfile
from typing import Annotated, Optional

import typer

from skewless.cli.common import ConfigOpt, VerboseOpt, console, handle_errors, settings_from

app = typer.Typer(help="Serve online features and predictions for the champion model.",
                  invoke_without_command=True)


@app.callback()
@handle_errors
def serve(
    host: Annotated[Optional[str], typer.Option(help="bind address (default: serving.host)")] = None,
    port: Annotated[Optional[int], typer.Option(help="port (default: serving.port)")] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, help="processes (default: serving.workers)")] = None,
    config: ConfigOpt = None, verbose: VerboseOpt = False,
) -> None:
    """Load the champion, answer /v1/predict and /v1/features; a newly promoted champion is
    picked up without a restart. Ctrl-C stops it."""
    import uvicorn

    settings = settings_from(config)
    cfg = settings.serving
    host, port, workers = host or cfg.host, port or cfg.port, workers or cfg.workers
    if settings.config_file:
        os.environ["SKEWLESS_SERVE_CONFIG"] = str(settings.config_file)
    # Set before any worker imports prometheus_client. A directory of its own per start: an
    # inherited one (Feast sets it when it loads, a previous run left files) would add
    # other processes' samples to ours.
    for name in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"):
        os.environ.pop(name, None)
    if workers > 1:  # /metrics then sums every worker
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="skewless-metrics-")
    auth = "API key required" if cfg.api_key else "no API key (set SKEWLESS_SERVING__API_KEY to require one)"
    console.print(f"serving on http://{host}:{port} ({workers} worker{'s' * (workers > 1)}, {auth}); "
                  f"docs at /docs")
    uvicorn.run("serving.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="debug" if verbose else "warning", access_log=False, loop="uvloop", http="httptools")
