"""The Spark session builder names the master when Spark cannot run on it, in one line,
instead of a page of Java stack lines (or a minute of retries)."""

import os
import socket
import subprocess
import sys

import pytest

from skewless.errors import ConfigError, MissingDependencyError, ServiceError
from skewless.settings import Settings
from skewless.spark import spark_session


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_master_url_of_no_known_form_is_named_before_java_starts():
    with pytest.raises(ConfigError, match="Spark master 'bogus://x' is not a Spark master URL"):
        spark_session(Settings(), "bogus://x")


def test_a_standalone_master_that_does_not_answer_is_named_at_once():
    port = _free_port()  # nothing listens there
    with pytest.raises(ServiceError, match=f"the Spark master spark://127.0.0.1:{port} does not answer "
                                           f"\\(127.0.0.1:{port}: Connection refused\\)"):
        spark_session(Settings(), f"spark://127.0.0.1:{port}")


def test_missing_java_is_named_with_how_to_install(monkeypatch, tmp_path):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingDependencyError, match="java \\(needed by Spark\\) is not installed.*apt-get install"):
        spark_session(Settings(), "local[1]")


def test_spark_failing_to_start_names_the_master(tmp_path):
    # A well-formed master Spark still refuses (yarn without a Hadoop configuration): the
    # JVM exits at once; what the user reads last is which master failed. Its own process,
    # since Spark keeps one session per process.
    env = {k: v for k, v in os.environ.items() if k not in ("HADOOP_CONF_DIR", "YARN_CONF_DIR")}
    code = ("from skewless.settings import Settings\nfrom skewless.spark import spark_session\n"
            "try:\n    spark_session(Settings(), 'yarn')\nexcept Exception as e:\n"
            "    print(type(e).__name__, e)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("ServiceError Spark could not start on master yarn: "), r.stdout + r.stderr[-2000:]
