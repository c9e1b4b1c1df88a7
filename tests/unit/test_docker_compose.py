"""docker-compose.yml is parsed (no Docker engine here) and must agree with the defaults."""

from pathlib import Path

import yaml

from skewless.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _host_ports(service: str) -> set[int]:
    return {int(str(p).split(":")[0]) for p in COMPOSE["services"][service].get("ports", [])}


def test_services_exist():
    assert {"kafka", "redis", "ingestion"} <= set(COMPOSE["services"])


def test_ports_match_default_settings():
    defaults = Settings()
    kafka_port = int(defaults.kafka.bootstrap_servers[0].rsplit(":", 1)[1])
    assert kafka_port in _host_ports("kafka")
    assert defaults.services.kafka_port in _host_ports("kafka")
    redis_port = int(defaults.redis_url.split(":")[-1].split("/")[0])
    assert redis_port in _host_ports("redis")


def test_kafka_is_kraft_with_the_pinned_version():
    kafka = COMPOSE["services"]["kafka"]
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert kafka["image"].endswith(":" + Settings().services.kafka_version)
    assert int(env["KAFKA_NUM_PARTITIONS"]) == Settings().kafka.partitions


def test_ingestion_talks_to_the_compose_kafka_with_valid_settings_keys(monkeypatch):
    ing = COMPOSE["services"]["ingestion"]
    env = ing["environment"]
    host, port = env["SKEWLESS_KAFKA__BOOTSTRAP_SERVERS"].split(":")
    assert host == "kafka"
    advertised = COMPOSE["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"//kafka:{port}" in advertised
    # Every SKEWLESS_* variable in the compose file must be a real setting.
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    s = Settings()
    assert s.kafka.bootstrap_servers == ["kafka:19092"]
    assert s.lake_path == "/data/lake"
    assert ing["command"][:2] == ["ingest", "consume"]
    assert (REPO / ing["build"] / "Dockerfile").is_file()
