"""``skewless serve``: the online API (features and predictions) under uvicorn."""

from __future__ import annotations

import os
import socket
import tempfile
from typing import Annotated, Optional

import typer

from cli.common import ConfigOpt, VerboseOpt, console, handle_errors, settings_from
from skewless.errors import ServiceError

app = typer.Typer(help="Serve online features and predictions for the champion model.",
                  invoke_without_command=True)


def check_can_bind(host: str, port: int) -> None:
    """Fail in one line, before the app loads, if the address cannot be listened on (uvicorn
    would find out only after loading, and after we printed "serving on")."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServiceError(f"cannot serve on {host}:{port}: the host does not resolve ({exc.strerror})",
                           "set --host (or serving.host) to an address of this machine") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            raise ServiceError(f"cannot serve on {host}:{port}: {exc.strerror or exc}",
                               "choose another --port (or serving.port), or stop what listens there") from None


@app.callback()
@handle_errors
def serve(
    host: Annotated[Optional[str], typer.Option(help="bind address (default: serving.host)")] = None,
    port: Annotated[Optional[int], typer.Option(min=1, max=65535, help="port, 1..65535 (default: serving.port)")] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, help="processes (default: serving.workers)")] = None,
    config: ConfigOpt = None, verbose: VerboseOpt = False,
) -> None:
    """Load the champion, answer /v1/predict and /v1/features; a newly promoted champion is
    picked up without a restart. Ctrl-C stops it."""
    import uvicorn

    settings = settings_from(config)
    cfg = settings.serving
    host = cfg.host if host is None else host
    port = cfg.port if port is None else port
    workers = cfg.workers if workers is None else workers
    check_can_bind(host, port)
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
