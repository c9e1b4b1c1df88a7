"""The ``skewless`` command: one sub-command group per stage, each a thin layer over a library.

The composition root: the only package that wires stages together (with the demo and the
benchmark runner); the kernel ``skewless`` and the stages never import it."""

from __future__ import annotations

import importlib

import typer

from skewless.quiet_warnings import hide_third_party_warnings

hide_third_party_warnings()

app = typer.Typer(
    name="skewless",
    help="Skewless: Kafka -> Parquet lake -> Spark features in Feast -> training and serving, one definition.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# (module, group name); a group whose module is absent is simply not offered.
_GROUPS = [
    ("cli.config", "config"),
    ("cli.services", "services"),
    ("cli.ingest", "ingest"),
    ("cli.lake", "lake"),
    ("cli.etl", "etl"),
    ("cli.features", "features"),
    ("cli.train", "train"),
    ("cli.serve", "serve"),
    ("cli.check", "check"),
    ("cli.monitor", "monitor"),
    ("cli.retrain", "retrain"),
]

for _module, _name in _GROUPS:
    try:
        _mod = importlib.import_module(_module)
    except ModuleNotFoundError as _exc:
        if _exc.name != _module:
            raise
        continue
    app.add_typer(_mod.app, name=_name)

from cli.bench import bench  # noqa: E402
from cli.demo import demo  # noqa: E402

app.command("bench")(bench)
app.command("demo")(demo)


def main() -> None:
    app()
