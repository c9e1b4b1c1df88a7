"""The CLI as a user meets it: subprocesses, exit codes, one-line errors, JSON last lines."""

import json
import os
import subprocess
import sys
from pathlib import Path


def run(args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=cwd, capture_output=True, text=True,
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
        [sys.executable, "-c", "from cli import main; main()", "services", "up"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, **env}, timeout=120,
    )
    assert r.returncode == 3
    assert "is not installed" in r.stderr and "apt-get install" in r.stderr


def _no_java_stack(stderr: str) -> bool:
    return "at org.apache" not in stderr and "Traceback" not in stderr


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# --- serve: the port it says is the port it listens on ----------------------------------

def test_serve_rejects_a_port_outside_1_to_65535(tmp_path):
    for port in ("70000", "0", "-1"):  # 70000 listened on 4464; 0 served on 8000
        r = run(["serve", "--port", port], cwd=tmp_path)
        assert r.returncode == 2, (port, r.stderr)
        assert "--port" in r.stderr and "serving on" not in r.stderr


def test_serve_names_a_port_in_use_before_loading_anything(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run(["serve", "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path)
    assert r.returncode == 4, r.stderr
    assert _error_lines(r.stderr) == [f"error: cannot serve on 127.0.0.1:{port}: Address already in use (choose "
                                      "another --port (or serving.port), or stop what listens there)"]
    assert "serving on" not in r.stderr


# --- etl run / train: impossible windows and masters are rejected before any work ----------

def _lake_with_events(tmp_path):
    import yaml

    from skewless.settings import load_settings
    from tests.integration.lake_fixtures import land_simulation
    from datetime import datetime, timezone

    cfg = tmp_path / "skewless.yaml"
    cfg.write_text(yaml.safe_dump({"lake_path": str(tmp_path / "lake"), "state_dir": str(tmp_path / "state")}))
    land_simulation(load_settings(cfg), events=200, seed=3, start=datetime(2026, 8, 1, tzinfo=timezone.utc), days=3)
    return cfg


def test_etl_run_rejects_end_before_start_before_spark_starts(tmp_path):
    cfg = _lake_with_events(tmp_path)  # there is data: without the check Spark would start
    for start, end in (("2026-08-03", "2026-08-01"), ("2026-08-02", "2026-08-02")):
        r = run(["etl", "run", "--config", str(cfg), "--start", start, "--end", end], cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert _error_lines(r.stderr) == [f"error: --end {end} must be after --start {start} "
                                          "(the output dates are [start, end))"]
        assert _no_java_stack(r.stderr) and "Spark" not in r.stderr
    assert not (tmp_path / "lake" / "features").exists()
    assert not (tmp_path / "state" / "features_recomputed.json").exists()  # no recompute mark


def test_etl_run_names_a_master_url_that_cannot_work(tmp_path):
    cfg = _lake_with_events(tmp_path)
    r = run(["etl", "run", "--config", str(cfg), "--master", "bogus://x"], cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert _error_lines(r.stderr) == ["error: --master 'bogus://x' is not a Spark master URL: use local, local[N], "
                                      "local[*], spark://host:port, yarn or k8s://https://host:port"]
    assert _no_java_stack(r.stderr)
    assert not (tmp_path / "state" / "features_recomputed.json").exists()


def test_etl_run_names_an_unknown_engine_before_spark_starts(tmp_path):
    cfg = _lake_with_events(tmp_path)
    r = run(["etl", "run", "--config", str(cfg), "--engine", "duckdb"], cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert _error_lines(r.stderr) == ["error: unknown ETL engine 'duckdb' (use auto or spark)"]
    assert _no_java_stack(r.stderr) and not (tmp_path / "lake" / "features").exists()


def test_train_rejects_start_after_end_instead_of_asking_for_more_data(tmp_path):
    r = run(["train", "--start", "2026-09-01", "--end", "2026-08-01"], cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert _error_lines(r.stderr) == ["error: --end 2026-08-01T00:00:00+00:00 must be after --start "
                                      "2026-09-01T00:00:00+00:00"]
    assert "ingest more" not in r.stderr


def test_train_rejects_a_cutoff_no_transaction_can_be_labelled_by(tmp_path):
    # label_maturity_days is 10: a transaction after --start is not 10 days old at the cutoff.
    r = run(["train", "--start", "2026-08-01", "--end", "2026-08-20", "--cutoff", "2026-08-05"], cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "--cutoff 2026-08-05T00:00:00+00:00 leaves no transaction after --start" in r.stderr
    assert "training.label_maturity_days" in r.stderr and "ingest more" not in r.stderr


# --- config show and the settings a user gets wrong ----------------------------------------

def test_config_show_masks_a_password_inside_redis_url(tmp_path):
    env = {"SKEWLESS_REDIS_URL": "redis://:hunter2@cache:6379/0"}
    human = run(["config", "show"], cwd=tmp_path, env=env)
    as_json = run(["config", "show", "--json"], cwd=tmp_path, env=env)
    assert human.returncode == 0 and as_json.returncode == 0, human.stderr + as_json.stderr
    assert "hunter2" not in human.stdout + human.stderr + as_json.stdout + as_json.stderr
    assert "redis_url: redis://:**********@cache:6379/0" in human.stderr
    assert json.loads(as_json.stdout.strip().splitlines()[-1])["redis_url"] == "redis://:**********@cache:6379/0"


def test_a_config_file_that_is_not_utf8_is_named(tmp_path):
    cfg = tmp_path / "latin1.yaml"
    cfg.write_bytes("lake_path: /data/caf\xe9\n".encode("latin-1"))
    r = run(["config", "show", "--config", str(cfg)], cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert _error_lines(r.stderr) == [f"error: {cfg}: not UTF-8 text (byte 0xe9 at offset 20) "
                                      "(save the settings file as UTF-8)"]


def test_environment_errors_name_the_variable(tmp_path):
    (tmp_path / "skewless.yaml").write_text("kafka:\n  partitions: 2\n")
    bad_value = run(["config", "show"], cwd=tmp_path, env={"SKEWLESS_KAFKA__PARTITIONS": "abc"})
    assert bad_value.returncode == 2
    assert _error_lines(bad_value.stderr)[0].startswith(
        "error: environment variable SKEWLESS_KAFKA__PARTITIONS: 'kafka.partitions': Input should be a valid integer")
    assert "skewless.yaml" not in bad_value.stderr
    typo = run(["config", "show"], cwd=tmp_path, env={"SKEWLESS_LAKE_PTH": "/data/lake"})
    assert typo.returncode == 2
    assert "unknown environment variable: SKEWLESS_LAKE_PTH (did you mean SKEWLESS_LAKE_PATH?)" in typo.stderr


def test_an_error_with_brackets_is_printed_as_it_is(tmp_path):
    # "[/db]" in a message was read as console markup and crashed the error handler.
    r = run(["config", "show"], cwd=tmp_path, env={"SKEWLESS_REDIS_URL": "unix:///tmp/redis.sock"})
    assert r.returncode == 2, r.stderr
    assert "redis://[:password@]host[:port][/db]" in r.stderr and "MarkupError" not in r.stderr
    assert len(_error_lines(r.stderr)) == 1


def test_produce_rejects_a_drift_it_cannot_make_before_touching_kafka(tmp_path):
    # No broker is asked: a Kafka on a port nobody listens on would make these hang or fail otherwise.
    env = {"SKEWLESS_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    for args, message in (
        (["--drift", "mean-shift"], "--drift must be one of amount-shift, fraud-pattern, country-mix, broken-field, card-enumeration"),
        (["--drift-fraction", "0.5"], "need --drift KIND"),
        (["--drift", "broken-field", "--schema-version", "1"], "which --schema-version 1 lacks"),
        (["--drift", "amount-shift", "--start", "2026-01-01", "--days", "7", "--drift-from", "2026-02-01"],
         "outside the simulated period"),
    ):
        r = run(["ingest", "produce", *args], cwd=tmp_path, env=env)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_lake_compact_names_a_bad_date_and_compacts_an_empty_lake_to_nothing(tmp_path):
    (tmp_path / "skewless.yaml").write_text("lake_path: lake\n")
    r = run(["lake", "compact", "--before", "yesterday"], cwd=tmp_path)
    assert r.returncode != 0 and "--before must be a date" in r.stderr and "Traceback" not in r.stderr
    r = run(["lake", "compact", "--json"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert all(t["files_after"] == t["files_before"] == 0 for t in summary["topics"].values()), summary
