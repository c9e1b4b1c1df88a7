"""``skewless bench NAME [--size N]``: a benchmark and its baseline, measured in the same run."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Annotated, Optional

import typer
from rich.table import Table

from skewless.cli.common import ConfigOpt, JsonOpt, VerboseOpt, console, emit, handle_errors, settings_from
from skewless.errors import ConfigError

def available() -> list[str]:
    import benchmarks

    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))


@handle_errors
def bench(
    name: Annotated[Optional[str], typer.Argument(help="benchmark name; omit to list them")] = None,
    size: Annotated[int, typer.Option("--size", min=1, help="problem size (events, rows, ...)")] = 100_000,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="alternating repetitions; medians reported")] = 3,
    config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Run benchmark NAME and print its figures, the baseline's, and their ratio."""
    names = available()
    if name is None:
        console.print("benchmarks: " + ", ".join(names))
        return
    if name not in names:
        raise ConfigError(f"unknown benchmark '{name}'", f"choose one of: {', '.join(names)}")
    module = importlib.import_module(f"benchmarks.bench_{name}")
    settings = settings_from(config)
    with console.status(f"running benchmark {name} (size {size:,}) ..."):
        result = module.run(settings, size=size, repeats=repeats)

    def human() -> None:
        table = Table("figure", "value")
        for k, v in result.items():
            table.add_row(k, f"{v:,}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v))
        console.print(table)

    # The JSON line always ends a benchmark's output (machines read it; people read the table).
    emit(result, True, human)
