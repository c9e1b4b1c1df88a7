"""Spark's Kafka source (``spark.read.format("kafka")``, ``spark.readStream.format("kafka")``):
its jars, fetched once from Maven Central like the Kafka broker's.

The connector (``org.apache.spark:spark-sql-kafka-0-10_2.13``) must be the installed Spark's
exact version, so ``mvn`` is given ``-Dspark.version=<pyspark.__version__>`` with the pom
shipped beside this module. Of what Maven resolves, only the jars pyspark does not ship
itself are kept (the connector, its token provider, kafka-clients, commons-pool2): one copy
of each class on the classpath. They live in ``<jar_cache_dir>/spark-kafka-<version>/``,
next to the broker's jars and shared by every checkout and every state dir (a test with a
private state dir does not fetch them again)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from skewless.errors import MissingDependencyError, ServiceError
from skewless.settings import Settings

POM = Path(__file__).parent / "spark-kafka-pom.xml"
CONNECTOR = "spark-sql-kafka-0-10_2.13"
MVN_INSTALL = "apt-get install -y maven"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def spark_version() -> str:
    import pyspark

    return pyspark.__version__


def connector_dir(settings: Settings, version: str | None = None) -> Path:
    return settings.services.jar_cache_dir / f"spark-kafka-{version or spark_version()}"


def _pyspark_jars() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def _shipped_by_pyspark(artifact_id: str, shipped: list[str]) -> bool:
    """pyspark's ``jars/`` holds ``<artifactId>-<version>.jar`` (any version counts: two
    versions of one library on a classpath is worse than the one Spark was built with)."""
    return any(name.startswith(artifact_id + "-") and name[len(artifact_id) + 1:][:1].isdigit()
               for name in shipped)


def kafka_connector_jars(settings: Settings) -> list[Path]:
    """The jars Spark's Kafka source needs beyond pyspark's own: fetched with mvn on the first
    call (into a temporary directory renamed into place when complete), cached afterwards."""
    version = spark_version()
    target = connector_dir(settings, version)
    if (target / f"{CONNECTOR}-{version}.jar").is_file():
        return sorted(target.glob("*.jar"))
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MissingDependencyError("mvn (needed to fetch Spark's Kafka connector)", MVN_INSTALL)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        resolved = tmp / "resolved"
        done = subprocess.run(
            [mvn, "-B", "-q", "-f", str(POM), f"-Dspark.version={version}",
             "dependency:copy-dependencies", "-DincludeScope=runtime",
             "-Dmdep.useRepositoryLayout=true", f"-DoutputDirectory={resolved}"],
            capture_output=True, text=True,
        )
        if done.returncode != 0:
            raise _mvn_error(_ANSI.sub("", done.stdout + done.stderr), version)
        keep = tmp / "jars"
        keep.mkdir()
        shipped = [p.name for p in _pyspark_jars().glob("*.jar")]
        # Repository layout: <group path>/<artifactId>/<version>/<artifactId>-<version>.jar
        for jar in resolved.rglob("*.jar"):
            if not _shipped_by_pyspark(jar.parent.parent.name, shipped):
                jar.rename(keep / jar.name)
        if not (keep / f"{CONNECTOR}-{version}.jar").is_file():
            raise ServiceError(f"mvn ran but fetched no {CONNECTOR}-{version}.jar", f"see {POM}")
        if not (target / f"{CONNECTOR}-{version}.jar").is_file():  # else another process finished first
            shutil.rmtree(target, ignore_errors=True)  # an incomplete directory not made here
            try:
                keep.rename(target)
            except OSError:
                if not (target / f"{CONNECTOR}-{version}.jar").is_file():
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(target.glob("*.jar"))


def _mvn_error(output: str, version: str) -> ServiceError:
    coords = f"org.apache.spark:{CONNECTOR}:{version}"
    artifact = rf"org\.apache\.spark:[\w.-]+:jar:{re.escape(version)}"
    # mvn's first answer, then the one it gives while that failure is cached in ~/.m2
    if re.search(rf"Could not find artifact {artifact}\b|{artifact} was not found in", output):
        return ServiceError(
            f"Spark's Kafka connector {coords} (matching the installed pyspark {version}) does not resolve "
            "on Maven Central",
            "pin pyspark to a version whose connector resolves, as pyproject.toml does",
        )
    first = next((line.removeprefix("[ERROR]").strip() for line in output.splitlines()
                  if line.startswith("[ERROR]") and line[7:].strip()), output.strip()[-300:])
    return ServiceError(f"mvn could not fetch Spark's Kafka connector {coords}: {first[:300]}",
                        "check the network to Maven Central (repo.maven.apache.org)")
