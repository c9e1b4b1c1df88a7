"""The SparkSession every Spark job of the platform runs on (the ETL's feature jobs, the
training set's point-in-time join): ``local[*]`` by default, a cluster by the master URL
(``settings.spark_master``) — scaling out is a settings change.

It lives in the kernel so stages share it without importing each other."""

from __future__ import annotations

from pyspark.sql import SparkSession

from skewless.settings import Settings


def spark_session(settings: Settings, master: str | None = None, app: str = "skewless") -> SparkSession:
    """The session for ``master`` (default ``settings.spark_master``). Spark keeps one
    session per process: if one is running already, it is reused as it is."""
    builder = (
        SparkSession.builder.master(master or settings.spark_master).appName(app)
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
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session
