"""docker-compose.yml and the Dockerfile are parsed (no Docker engine here) and must agree
with the defaults and with what pyproject.toml installs."""

import tomllib
from pathlib import Path

import pytest
import yaml

from skewless.errors import ConfigError
from skewless.settings import Settings, check_environment

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
    check_environment({k: str(v) for k, v in env.items()})
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    s = Settings()
    assert s.kafka.bootstrap_servers == ["kafka:19092"]
    assert s.lake_path == "/data/lake"
    assert ing["command"][:2] == ["ingest", "consume"]
    assert (REPO / ing["build"] / "Dockerfile").is_file()


def dockerfile_copies(text: str) -> set[str]:
    """The sources of every COPY instruction (``COPY a b ./`` -> {a, b})."""
    sources: set[str] = set()
    for line in text.splitlines():
        words = line.split()
        if words and words[0].upper() == "COPY":
            args = [w for w in words[1:] if not w.startswith("--")]
            sources |= {a.rstrip("/") for a in args[:-1]}
    return sources


def installed_packages() -> set[str]:
    """Top-level packages pyproject's [tool.setuptools.packages.find] include list installs."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    return {pattern.split(".")[0].rstrip("*") for pattern in include}


def missing_from_image(dockerfile: str) -> set[str]:
    return installed_packages() - dockerfile_copies(dockerfile)


def test_the_image_holds_every_installed_package():
    # Without monitoring/ the image could not run `skewless check`.
    assert missing_from_image((REPO / "Dockerfile").read_text()) == set()
    assert {"pyproject.toml", "skewless.yaml"} <= dockerfile_copies((REPO / "Dockerfile").read_text())


def test_a_package_the_image_lacks_is_caught():
    dockerfile = (REPO / "Dockerfile").read_text().replace("COPY monitoring ./monitoring\n", "")
    assert missing_from_image(dockerfile) == {"monitoring"}


def test_every_top_level_package_is_installed():
    # A new stage must be in pyproject's include list (and so, by the test above, in the image).
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    assert packages - installed_packages() == set()


def test_dockerfile_environment_names_real_settings():
    names = {}
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("ENV "):
            names |= dict(pair.split("=", 1) for pair in line.split()[1:])
    assert names, "the image sets its lake and state paths"
    check_environment(names)
    with pytest.raises(ConfigError, match="SKEWLESS_LAKE_PTH"):
        check_environment({**names, "SKEWLESS_LAKE_PTH": "/data/lake"})
