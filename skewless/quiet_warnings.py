"""What a user sees: other libraries' deprecation and experimental-feature chatter is
hidden, warnings raised in our own code still show. Called by the CLI at import and by
benchmark child processes (which do not import the CLI)."""

from __future__ import annotations

import os
import warnings

# The checkout (or installed tree) holding our packages: warnings raised in our code still show.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_OURS = ("cli", "skewless", "ingestion", "etl", "training", "serving", "monitoring", "feature_repo", "benchmarks")
_show_warning = warnings.showwarning


def _show_ours_only(message, category, filename, lineno, file=None, line=None):
    """Feast re-enables DeprecationWarnings and RuntimeWarnings when imported
    (``simplefilter("once")`` at its module level, ahead of the filters below), so the
    filters alone do not hold: drop warnings raised in other libraries' code when they
    are shown (ours still show)."""
    ours = filename.startswith(_ROOT) and filename[len(_ROOT):].split(os.sep, 1)[0] in _OURS
    if not ours:
        return
    _show_warning(message, category, filename, lineno, file, line)


def hide_third_party_warnings() -> None:
    """Third-party deprecation chatter (ibis, MLflow, kafka-python) and Feast's experimental
    -feature notices are not for our users; ours still show."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*[Ee]xperimental.*")
    global _show_warning
    if warnings.showwarning is not _show_ours_only:
        _show_warning = warnings.showwarning
    warnings.showwarning = _show_ours_only
