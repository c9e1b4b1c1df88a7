"""Shared fixtures: one real Kafka broker and one Redis per test session.

``services`` starts them through ``skewless.services`` (idempotent: in CI they were
already started by ``.ci/run``), and every test gets its own topics, consumer group and
lake directory from ``make_settings`` so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from skewless.settings import Settings, load_settings
from tests.isolation import isolated_settings

REPO = Path(__file__).resolve().parent.parent


def _base_settings() -> Settings:
    return load_settings(REPO / "skewless.yaml")


@pytest.fixture(scope="session")
def services() -> Settings:
    """The real local Kafka broker and Redis, started once for the session."""
    from skewless import services as svc

    settings = _base_settings()
    svc.up(settings)
    return settings


@pytest.fixture
def make_settings(services: Settings, tmp_path: Path):
    """Settings isolated for one test: unique topics, consumer group and lake."""

    def make(**overrides) -> Settings:
        kafka = {"partitions": overrides.pop("partitions", 4), **overrides.pop("kafka", {})}
        return isolated_settings(services, tmp_path, kafka=kafka, **overrides)

    return make


@pytest.fixture
def settings_file(tmp_path: Path):
    """Write a skewless.yaml for a subprocess to use; returns its path."""
    import yaml

    def write(settings: Settings) -> Path:
        data = settings.model_dump(mode="json", exclude={"config_file"})
        data["kafka"].pop("sasl_password", None)
        data.pop("redis_password", None)
        data.get("serving", {}).pop("api_key", None)
        path = tmp_path / f"skewless-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write


def pytest_collection_modifyitems(config, items):
    # Integration tests are marked by their folder, so nobody forgets the marker.
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)
