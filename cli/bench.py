"""``skewless bench NAME [--size N] [--repeats R] [--json]``: a benchmark and its baseline,
measured in the same run.

Benchmarks are discovered, not listed here: every module ``benchmarks/bench_<name>.py``
with ``run(settings, size, **kw) -> dict`` is benchmark ``<name>``. The figures are printed
as a table (stderr; the module's own ``table(result)`` when it has one) and, with or
without ``--json``, one JSON line ends stdout. ``--size`` left out, each benchmark uses its
own default size; a ``run`` taking ``progress`` gets a callback that updates the status line,
one taking ``on_stage`` one that drives a progress bar per stage (``on_stage(description, done, total)``).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Annotated, Any, Optional

import typer

from cli.common import ConfigOpt, JsonOpt, VerboseOpt, console, emit, handle_errors, progress, settings_from
from skewless.errors import ConfigError


def available() -> list[str]:
    """Names of the benchmarks in the ``benchmarks`` package (without importing them)."""
    try:
        import benchmarks
    except ModuleNotFoundError:  # installed without the benchmarks package
        return []
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(benchmarks.__path__)
                  if m.name.startswith("bench_"))


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,}" if isinstance(value, int) or abs(value) >= 1000 else f"{value:g}"


def _table(name: str, result: dict[str, Any]):
    from rich.table import Table

    table = Table("figure", "value", title=f"benchmark {name}")
    for k, v in result.items():
        table.add_row(k, _fmt(v))
    return table


_NAMES = ", ".join(available()) or "(none found)"


@handle_errors
def bench(
    name: Annotated[Optional[str], typer.Argument(help=f"benchmark to run, one of: {_NAMES}; omit to list them")] = None,
    size: Annotated[Optional[int], typer.Option("--size", "--events", min=1, help="problem size (events, rows, ...; "
                                                "freshness: the catch-up backlog; scale: events, its baseline a "
                                                "tenth); default: the benchmark's own")] = None,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="alternating repetitions; medians reported")] = 3,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="serving: worker processes of both "
                                                   "servers (default 1)")] = None,
    duration: Annotated[Optional[float], typer.Option("--duration", min=1, help="serving: seconds per load run "
                                                      "(default 10); freshness: measured seconds per rate "
                                                      "(default 120)")] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", min=1, help="drift: trials per size and scenario "
                                                  "(default 200)")] = None,
    rates: Annotated[Optional[str], typer.Option("--rates", help="freshness: steady rates in events/s, "
                                                 "comma-separated (default 1000,5000)")] = None,
    order: Annotated[Optional[str], typer.Option("--order", help="ingest: the traffic, in-order, out-of-order "
                                                 "(ten days of event time, shuffled) or both (default)")] = None,
    config: ConfigOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Run benchmark NAME and print its figures, the baseline's, and their ratio.

    The table goes to stderr; the last line of stdout is always one JSON object.
    """
    names = available()
    if name is None:
        console.print("benchmarks: " + (", ".join(names) or "(none found)"))
        emit({"benchmarks": names}, True)
        return
    if name not in names:
        raise ConfigError(f"unknown benchmark '{name}'", f"choose one of: {', '.join(names)}")
    module = importlib.import_module(f"benchmarks.bench_{name}")
    extra: dict[str, Any] = {k: v for k, v in (("size", size), ("workers", workers), ("duration", duration),
                                                ("trials", trials)) if v is not None}
    if rates is not None:
        if "rates" not in inspect.signature(module.run).parameters:
            raise ConfigError(f"benchmark '{name}' takes no --rates")
        extra["rates"] = module.parse_rates(rates)
    if order is not None:
        if "order" not in inspect.signature(module.run).parameters:
            raise ConfigError(f"benchmark '{name}' takes no --order")
        extra["order"] = order
    check = getattr(module, "check_args", None)
    if check is not None:  # the benchmark's own argument checks, before any service is touched
        check(**extra)
    settings = settings_from(config)
    sized = f"size {size:,}" if size is not None else "default size"
    if "on_stage" in inspect.signature(module.run).parameters:
        # Long stages: one progress bar each (``on_stage(description, done, total)``).
        with progress() as bar:
            tasks: dict[str, Any] = {}

            def on_stage(description: str, done: int, total: int | None) -> None:
                if description not in tasks:
                    tasks[description] = bar.add_task(description, total=total)
                bar.update(tasks[description], completed=done, total=total)

            result = module.run(settings, repeats=repeats, on_stage=on_stage, **extra)
    else:
        with console.status(f"running benchmark {name} ({sized}) ...") as status:
            if "progress" in inspect.signature(module.run).parameters:
                extra["progress"] = lambda msg: status.update(f"running benchmark {name}: {msg}")
            result = module.run(settings, repeats=repeats, **extra)
    # The JSON line always ends a benchmark's output (machines read it; people read the table).
    render = getattr(module, "table", None)
    emit(result, True, lambda: console.print(render(result) if callable(render) else _table(name, result)))
