"""Spark's Kafka connector jars: fetched once with mvn, named when mvn is missing, cached
afterwards, and only the jars pyspark does not ship itself."""

from pathlib import Path

import pytest

from skewless import spark_kafka
from skewless.errors import MissingDependencyError, ServiceError
from skewless.settings import Settings


def _settings(cache: Path) -> Settings:
    return Settings(services={"jar_cache_dir": cache})


def test_missing_mvn_is_named_with_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(MissingDependencyError) as err:
        spark_kafka.kafka_connector_jars(_settings(tmp_path / "jars"))
    assert str(err.value) == ("mvn (needed to fetch Spark's Kafka connector) is not installed or not on PATH "
                              "(install it with: apt-get install -y maven)")
    assert not (tmp_path / "jars").exists()  # nothing half-made


def test_cached_jars_are_used_without_mvn(monkeypatch, tmp_path):
    version = spark_kafka.spark_version()
    cached = tmp_path / "jars" / f"spark-kafka-{version}"
    cached.mkdir(parents=True)
    names = [f"spark-sql-kafka-0-10_2.13-{version}.jar", "kafka-clients-3.9.2.jar", "commons-pool2-2.13.1.jar"]
    for name in names:
        (cached / name).write_bytes(b"")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # mvn would be named missing if it were called
    assert spark_kafka.kafka_connector_jars(_settings(tmp_path / "jars")) == sorted(cached / n for n in names)


def test_an_incomplete_cache_is_fetched_again(monkeypatch, tmp_path):
    # No connector jar in it (a fetch that never finished): not trusted, so mvn is needed.
    (tmp_path / "jars" / f"spark-kafka-{spark_kafka.spark_version()}").mkdir(parents=True)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(MissingDependencyError, match="mvn"):
        spark_kafka.kafka_connector_jars(_settings(tmp_path / "jars"))


@pytest.mark.parametrize("artifact, shipped", [
    ("scala-library", True),            # pyspark: scala-library-2.13.x.jar (another version: still dropped)
    ("lz4-java", True),
    ("spark-tags_2.13", True),
    ("commons-pool2", False),           # pyspark has commons-pool-1.5.4.jar, another library
    ("kafka-clients", False),
    ("spark-sql-kafka-0-10_2.13", False),
])
def test_only_what_pyspark_lacks_is_kept(artifact, shipped):
    names = ["scala-library-2.13.18.jar", "lz4-java-1.11.0.jar", "spark-tags_2.13-4.2.0.jar",
             "commons-pool-1.5.4.jar", "spark-sql_2.13-4.2.0.jar"]
    assert spark_kafka._shipped_by_pyspark(artifact, names) is shipped


# What mvn 3.8 printed for -Dspark.version=4.3.0 (its connector is not on Maven Central).
NOT_FOUND = (
    "\x1b[0m[ERROR] Failed to execute goal on project skewless-spark-kafka-connector: Could not resolve "
    "dependencies for project dev.skewless:skewless-spark-kafka-connector:pom:1: Could not find artifact "
    "org.apache.spark:spark-sql-kafka-0-10_2.13:jar:4.3.0 in central (https://repo.maven.apache.org/maven2) "
    "-> [Help 1]\n[ERROR] \n[ERROR] To see the full stack trace of the errors, re-run Maven with the -e switch.\n"
)


# ... and when asked again while that failure is cached in ~/.m2.
NOT_FOUND_CACHED = (
    "\x1b[0m[ERROR] Failed to execute goal on project skewless-spark-kafka-connector: Could not resolve "
    "dependencies for project dev.skewless:skewless-spark-kafka-connector:pom:1: "
    "org.apache.spark:spark-sql-kafka-0-10_2.13:jar:4.3.0 was not found in https://repo.maven.apache.org/maven2 "
    "during a previous attempt. This failure was cached in the local repository and resolution is not "
    "reattempted until the update interval of central has elapsed or updates are forced -> [Help 1]\n"
)


@pytest.mark.parametrize("output", [NOT_FOUND, NOT_FOUND_CACHED], ids=["first", "cached"])
def test_a_connector_version_maven_central_lacks_is_one_line_naming_it(output):
    err = spark_kafka._mvn_error(spark_kafka._ANSI.sub("", output), "4.3.0")
    assert isinstance(err, ServiceError)
    assert str(err) == ("Spark's Kafka connector org.apache.spark:spark-sql-kafka-0-10_2.13:4.3.0 (matching the "
                        "installed pyspark 4.3.0) does not resolve on Maven Central (pin pyspark to a version "
                        "whose connector resolves, as pyproject.toml does)")


def test_another_mvn_failure_names_mvn_s_first_error_line():
    out = ("[ERROR] Failed to execute goal on project x: Could not transfer artifact "
           "org.apache.spark:spark-sql-kafka-0-10_2.13:pom:4.2.0 from/to central: Connection refused\n[ERROR] \n")
    err = spark_kafka._mvn_error(out, "4.2.0")
    assert "\n" not in str(err)
    assert str(err).startswith("mvn could not fetch Spark's Kafka connector org.apache.spark:"
                               "spark-sql-kafka-0-10_2.13:4.2.0: Failed to execute goal on project x: "
                               "Could not transfer artifact")
