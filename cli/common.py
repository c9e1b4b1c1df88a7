"""Shared CLI plumbing: --config/--json/--verbose options, errors, JSON summaries, progress.

Every command is a thin layer: parse options, load settings, call one library function,
print a human summary and (with ``--json``) one JSON object as the last line.
"""

from __future__ import annotations

import functools
from datetime import datetime, timezone
import json
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from skewless.errors import ConfigError, SkewlessError
from skewless.settings import Settings, load_settings

ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", help="settings file (default: nearest skewless.yaml upward from cwd)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print a JSON summary as the last line")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="show tracebacks on errors")]

# Human output goes to stderr when --json is set, so stdout's last line is the JSON.
console = Console(stderr=True)


def settings_from(config: Path | None) -> Settings:
    return load_settings(config)


def emit(summary: dict[str, Any], as_json: bool, human: Callable[[], None] | None = None) -> None:
    """Print the human summary, then the JSON one (last line of stdout) with --json."""
    if human is not None:
        human()
    if as_json:
        sys.stdout.write(json.dumps(summary, default=str, sort_keys=True) + "\n")
        sys.stdout.flush()


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One clear line and a non-zero exit for known errors; traceback only with --verbose."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verbose = bool(kwargs.get("verbose", False))
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except SkewlessError as exc:
            if verbose:
                traceback.print_exc()
            console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:  # an unexpected failure: still one line unless --verbose
            if verbose:
                traceback.print_exc()
            console.print(
                f"[red]error:[/red] {type(exc).__name__}: {escape(str(exc))} (run with --verbose for the traceback)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper


def progress(disable: bool = False) -> Progress:
    """A progress bar on stderr for long work."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=disable or not console.is_terminal,
        transient=False,
    )


def parse_time(text: str | None, flag: str = "time") -> datetime | None:
    """An ISO date or timestamp option; naive values are UTC."""
    if text is None:
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{flag} must be an ISO date or timestamp, got {text!r}") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
