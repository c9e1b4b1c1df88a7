"""The SparkSession for feature jobs: ``local[*]`` by default, a cluster by the master URL."""

from __future__ import annotations

from pyspark.sql import SparkSession

from skewless.settings import Settings


def spark_session(settings: Settings, master: str | None = None, app: str = "skewless-etl") -> SparkSession:
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
    )
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session
