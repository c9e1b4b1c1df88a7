"""A real Apache Kafka broker in KRaft mode (single node: broker + controller).

The jars come from Maven Central once, through ``mvn`` and the small pom shipped beside
this module, into ``<jar_cache_dir>/kafka-<version>/lib`` (shared by every checkout).
Java 17 runs the broker; its data lives in ``<state_dir>/services/kafka``.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from skewless.errors import MissingDependencyError, ServiceError
from skewless.services.process import log_tail, port_open, read_pid, start_detached, stop
from skewless.settings import Settings

HERE = Path(__file__).parent
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"


def _dir(settings: Settings) -> Path:
    return settings.state_dir / "services" / "kafka"


def jar_dir(settings: Settings) -> Path:
    return settings.services.jar_cache_dir / f"kafka-{settings.services.kafka_version}" / "lib"


def _require(tool: str, install: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise MissingDependencyError(tool, install)
    return path


def fetch_jars(settings: Settings) -> Path:
    """Download the broker's jars with mvn (once; cached afterwards)."""
    target = jar_dir(settings)
    if target.is_dir() and any(target.glob("kafka_2.13-*.jar")):
        return target
    mvn = _require("mvn", "apt-get install -y maven")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".lib-", dir=target.parent))
    cmd = [
        mvn, "-B", "-q", "-f", str(HERE / "kafka-pom.xml"),
        f"-Dkafka.version={settings.services.kafka_version}",
        "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={tmp}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = (done.stdout + done.stderr).strip().splitlines()[-10:]
        raise ServiceError("mvn could not fetch the Kafka jars:\n" + "\n".join(tail))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def _server_properties(settings: Settings, data_dir: Path) -> str:
    s = settings.services
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{s.kafka_host}:{s.kafka_controller_port}",
        f"listeners=PLAINTEXT://{s.kafka_host}:{s.kafka_port},CONTROLLER://{s.kafka_host}:{s.kafka_controller_port}",
        f"advertised.listeners=PLAINTEXT://{s.kafka_host}:{s.kafka_port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={data_dir}",
        f"num.partitions={settings.kafka.partitions}",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=8",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=true",
        "log.retention.hours=-1",
        "",
    ])


def status(settings: Settings) -> dict[str, Any]:
    s = settings.services
    pid = read_pid(_dir(settings) / "kafka.pid")
    return {
        "running": port_open(s.kafka_host, s.kafka_port) and _answers(settings, timeout_s=5),
        "managed": pid is not None,
        "pid": pid,
        "address": f"{s.kafka_host}:{s.kafka_port}",
        "version": s.kafka_version,
    }


def _answers(settings: Settings, timeout_s: float = 2.0) -> bool:
    """True if a Kafka broker answers a metadata request."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    s = settings.services
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=f"{s.kafka_host}:{s.kafka_port}",
            request_timeout_ms=int(timeout_s * 1000),
        )
    except (KafkaError, ValueError, OSError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def up(settings: Settings) -> dict[str, Any]:
    s = settings.services
    d = _dir(settings)
    if read_pid(d / "kafka.pid") is None and port_open(s.kafka_host, s.kafka_port):
        # Someone else's broker (or ours from another state dir) is already there.
        return {**status(settings), "started": False}
    if read_pid(d / "kafka.pid") is not None:
        return {**_wait(settings, d), "started": False}
    java = _require("java", "apt-get install -y openjdk-17-jre-headless")
    lib = fetch_jars(settings)
    data_dir = d / "data"
    d.mkdir(parents=True, exist_ok=True)
    props = d / "server.properties"
    props.write_text(_server_properties(settings, data_dir))
    classpath = f"{lib}/*"
    if not (data_dir / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        fmt = subprocess.run(
            [java, "-cp", classpath, STORAGE_TOOL, "format", "-t", cluster_id, "-c", str(props)],
            capture_output=True, text=True,
        )
        if fmt.returncode != 0:
            raise ServiceError(f"could not format the Kafka storage in {data_dir}: {fmt.stdout}{fmt.stderr}")
    cmd = [
        java, f"-Xmx{s.kafka_heap}", f"-Xms{s.kafka_heap}", "-XX:+UseG1GC",
        f"-Dlog4j2.configurationFile={HERE / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={d}", "-cp", classpath, MAIN_CLASS, str(props),
    ]
    start_detached(cmd, d / "kafka.log", d / "kafka.pid")
    return {**_wait(settings, d), "started": True}


def _wait(settings: Settings, d: Path) -> dict[str, Any]:
    deadline = time.monotonic() + settings.services.start_timeout_s
    while time.monotonic() < deadline:
        if read_pid(d / "kafka.pid") is None:
            raise ServiceError(f"the Kafka broker exited during start-up:\n{log_tail(d / 'kafka.log')}")
        if port_open(settings.services.kafka_host, settings.services.kafka_port) and _answers(settings):
            return status(settings)
        time.sleep(0.5)
    raise ServiceError(
        f"the Kafka broker did not answer within {settings.services.start_timeout_s:.0f}s:\n"
        f"{log_tail(d / 'kafka.log')}"
    )


def down(settings: Settings) -> dict[str, Any]:
    return {"stopped": stop(_dir(settings) / "kafka.pid", timeout=30)}
