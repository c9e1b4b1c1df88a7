"""``skewless config``: show the effective settings."""

from __future__ import annotations

import typer
import yaml

from cli.common import ConfigOpt, JsonOpt, VerboseOpt, console, emit, handle_errors, settings_from

app = typer.Typer(help="Inspect the effective settings.", no_args_is_help=True)


@app.command("show")
@handle_errors
def show(config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Print the effective settings (file + SKEWLESS_* environment), secrets masked."""
    settings = settings_from(config)
    data = settings.public_dict()
    emit(data, json_out, None if json_out else lambda: console.print(yaml.safe_dump(data, sort_keys=False)))
