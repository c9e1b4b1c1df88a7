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
from skewless.spark_kafka import kafka_connector_jars

JAVA_INSTALL = "apt-get install -y openjdk-17-jre-headless"
KAFKA_SOURCE_CLASS = "org.apache.spark.sql.kafka010.KafkaSourceProvider"


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


def spark_session(settings: Settings, master: str | None = None, app: str = "skewless",
                  kafka: bool = False) -> SparkSession:
    """The session for ``master`` (default ``settings.spark_master``). Spark keeps one
    session per process: if one is running already, it is reused as it is. A master URL
    that cannot work, or a Spark that fails to start, is a one-line error naming the master.

    ``kafka=True``: the session can read Kafka (``format("kafka")``, batch and streaming).
    A new session starts with ``spark.jars`` = :func:`kafka_connector_jars`. A session
    (or its JVM) already running without them gets them added, not restarted: Spark reads
    ``spark.jars`` only when its JVM launches (a stopped-and-restarted session in the same
    process still cannot find the source), and restarting would stop DataFrames others in
    the process hold. So the jars go into the running driver's class loader and are shipped
    to the executors (``addJar``); if that cannot be done, a one-line error says so."""
    master = master or settings.spark_master
    _check_can_start(master)
    jars = kafka_connector_jars(settings) if kafka else []
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
    if jars:
        builder = builder.config("spark.jars", ",".join(str(j) for j in jars))
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
    if jars:
        _ensure_kafka_source(session, jars)
    return session


def has_kafka_source(session: SparkSession) -> bool:
    """Can this session's driver load Spark's Kafka source?"""
    jvm = session.sparkContext._jvm
    loader = jvm.org.apache.spark.util.Utils.getContextOrSparkClassLoader()
    try:
        jvm.java.lang.Class.forName(KAFKA_SOURCE_CLASS, False, loader)
        return True
    except Exception:  # Py4JJavaError(ClassNotFoundException)
        return False


def _ensure_kafka_source(session: SparkSession, jars: list[Path]) -> None:
    """Add the connector's jars to a session already running without them (see
    :func:`spark_session`): into the driver's class loader, which every Py4J thread and, in
    local mode, every executor shares; and to the executors through ``addJar``."""
    if has_kafka_source(session):
        return
    jvm = session.sparkContext._jvm
    loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
    mutable = jvm.java.lang.Class.forName("org.apache.spark.util.MutableURLClassLoader")
    if loader is None or not mutable.isInstance(loader):
        raise ServiceError("a Spark session without the Kafka connector is already running in this process "
                           "and its class loader cannot take more jars",
                           "start the process's first Spark session with kafka=True, or run the Kafka job "
                           "in its own process")
    context = session.sparkContext._jsc.sc()
    listed = {u.rsplit("/", 1)[-1] for u in context.listJars().mkString("\n").splitlines()}
    for jar in jars:
        loader.addURL(jvm.java.io.File(str(jar)).toURI().toURL())
        if jar.name not in listed:
            context.addJar(str(jar))
    if not has_kafka_source(session):
        raise ServiceError(f"Spark's Kafka source ({KAFKA_SOURCE_CLASS}) is still not loadable after adding "
                           f"{', '.join(j.name for j in jars)}", "run the Kafka job in its own process")
