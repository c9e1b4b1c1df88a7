"""The SparkSession every Spark job of the platform runs on (the ETL's feature jobs, the
training set's point-in-time join): ``local[*]`` by default, a cluster by the master URL
(``settings.spark_master``) — scaling out is a settings change.

It lives in the kernel so stages share it without importing each other."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from skewless.errors import ConfigError, MissingDependencyError, ServiceError
from skewless.settings import Settings
from skewless.settings_checks import check_spark_master, spark_standalone_hosts

JAVA_INSTALL = "apt-get install -y openjdk-17-jre-headless"


def _check_can_start(master: str) -> None:
    """What can be known before Spark starts: the URL's form, Java, a standalone master
    that answers. Each failure named here would otherwise be a page of Java stack lines
    (an unreachable standalone master: a minute of retries first)."""
    try:
        check_spark_master(master)
    except ValueError as exc:
        raise ConfigError(f"Spark master {exc}") from None
    if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
        raise MissingDependencyError("java (needed by Spark)", JAVA_INSTALL)
    hosts = spark_standalone_hosts(master)
    errors = []
    for host, port in hosts:
        try:
            socket.create_connection((host, port), timeout=5).close()
            return
        except OSError as exc:
            errors.append(f"{host}:{port}: {exc.strerror or exc}")
    if hosts:
        raise ServiceError(f"the Spark master {master} does not answer ({'; '.join(errors)})",
                           "start the standalone master, or set spark_master (or --master) to local[*]")


@contextlib.contextmanager
def _jvm_output_to(log: Path):
    """Spark's JVM inherits the process's stdout and stderr when it starts: point both at
    ``log`` for that moment, so its start-up banner and warnings (and later its executors'
    and Python workers' lines) go to the log, and the terminal shows only our output."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def spark_log(settings: Settings) -> Path:
    return settings.state_dir / "logs" / "spark.log"


def spark_session(settings: Settings, master: str | None = None, app: str = "skewless") -> SparkSession:
    """The session for ``master`` (default ``settings.spark_master``). Spark keeps one
    session per process: if one is running already, it is reused as it is. A master URL
    that cannot work, or a Spark that fails to start, is a one-line error naming the master."""
    master = master or settings.spark_master
    _check_can_start(master)
    builder = (
        SparkSession.builder.master(master).appName(app)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        # UTC-adjusted INT64 timestamps: every reader (pyarrow, DuckDB, dask) sees UTC, not naive INT96.
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.driver.memory", "2g")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.files.maxPartitionBytes", str(128 * 1024 * 1024))
        .config("spark.sql.files.openCostInBytes", str(1024 * 1024))
        # pandas <-> Spark through Arrow (entity rows in, training sets out).
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    log = spark_log(settings)
    try:
        with _jvm_output_to(log):
            session = builder.getOrCreate()
    except Exception as exc:  # Py4J / PySpark errors: Spark's own lines are in the log
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ServiceError(f"Spark could not start on master {master}: {first[:300]}",
                           f"Spark's own messages are in {log}; check the master URL and that the cluster "
                           "accepts jobs") from exc
    session.sparkContext.setLogLevel("ERROR")
    return session
