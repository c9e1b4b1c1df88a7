"""The ``skewless`` command: one sub-command group per stage, each a thin layer over a library.

The composition root: the only package that wires stages together (with the demo and the
benchmark runner); the kernel ``skewless`` and the stages never import it."""

from __future__ import annotations

import importlib
import os
import warnings

import typer

# Third-party deprecation chatter (ibis, MLflow, kafka-python) is not for our users.
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message=".*[Ee]xperimental.*")
# The checkout (or installed tree) holding our packages: warnings raised in our code still show.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_OURS = ("cli", "skewless", "ingestion", "etl", "training", "serving", "monitoring", "feature_repo", "benchmarks")
_show_warning = warnings.showwarning


def _show_ours_only(message, category, filename, lineno, file=None, line=None):
    """Feast re-enables DeprecationWarnings and RuntimeWarnings when imported
    (``simplefilter("once")`` at its module level, ahead of the filters above), so the
    filters alone do not hold: drop warnings raised in other libraries' code when they
    are shown (ours still show)."""
    ours = filename.startswith(_ROOT) and filename[len(_ROOT):].split(os.sep, 1)[0] in _OURS
    if not ours:
        return
    _show_warning(message, category, filename, lineno, file, line)


warnings.showwarning = _show_ours_only

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
