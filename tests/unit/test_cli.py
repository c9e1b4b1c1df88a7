"""The CLI as a user meets it: subprocesses, exit codes, one-line errors, JSON last lines."""

import json
import os
import subprocess
import sys
from pathlib import Path


def run(args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "skewless.cli", *args], cwd=cwd, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=120,
    )


def test_config_show_json_from_any_directory(tmp_path):
    (tmp_path / "skewless.yaml").write_text("lake_path: mylake\n")
    (tmp_path / "deep").mkdir()
    r = run(["config", "show", "--json"], cwd=tmp_path / "deep")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout.strip().splitlines()[-1])
    assert data["lake_path"] == str(tmp_path / "mylake")
    assert data["state_dir"] == str(tmp_path / ".skewless")
    assert "feature_repo_path" in data


def test_config_error_is_one_line_and_nonzero(tmp_path):
    (tmp_path / "skewless.yaml").write_text("nope: 1\n")
    r = run(["config", "show"], cwd=tmp_path)
    assert r.returncode == 2
    assert "unknown key 'nope'" in r.stderr
    assert "Traceback" not in r.stderr
    r = run(["config", "show", "--verbose"], cwd=tmp_path)
    assert "Traceback" in r.stderr


def test_missing_tool_is_named_with_how_to_install(tmp_path):
    # No redis-server on PATH (and a free port): `services up` must name it and the fix.
    env = {"PATH": str(tmp_path), "SKEWLESS_SERVICES__REDIS_PORT": "6999", "SKEWLESS_SERVICES__KAFKA_PORT": "9999"}
    r = subprocess.run(
        [sys.executable, "-c", "from skewless.cli import main; main()", "services", "up"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, **env}, timeout=120,
    )
    assert r.returncode == 3
    assert "is not installed" in r.stderr and "apt-get install" in r.stderr
