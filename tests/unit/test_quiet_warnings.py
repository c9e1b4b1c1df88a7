"""What a user sees: after ``hide_third_party_warnings`` (the CLI's import, a benchmark's
child process) a warning raised in another library's file is not shown, one raised in our
code is, and Feast-style experimental notices are filtered out — checked in a fresh
interpreter, as a user's process would show them on stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import skewless

SCRIPT = """
import warnings, sys
from skewless.quiet_warnings import hide_third_party_warnings
hide_third_party_warnings()
ours = sys.argv[1]
warnings.warn_explicit("from feast", UserWarning, "/site-packages/feast/utils.py", 3)
warnings.warn_explicit("On demand feature view is an experimental feature.", RuntimeWarning, ours, 5)
warnings.warn_explicit("old api", DeprecationWarning, "/site-packages/ibis/x.py", 9)
warnings.warn_explicit("from us", UserWarning, ours, 7)
"""


def test_other_libraries_warnings_are_hidden_and_ours_shown():
    ours = str(Path(skewless.__file__).resolve().parent / "settings.py")
    out = subprocess.run([sys.executable, "-c", SCRIPT, ours], capture_output=True, text=True, timeout=60,
                         cwd=Path(skewless.__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert "from us" in out.stderr
    for hidden in ("from feast", "experimental", "old api"):
        assert hidden not in out.stderr, out.stderr
