"""Fixtures for the Spark feature-job tests, imported explicitly by those test modules
(``from tests.integration.spark_fixtures import spark, etl_settings  # noqa``).

``spark``: one SparkSession per test session (the jobs' ``getOrCreate`` reuses it).
``etl_settings``: settings with a private lake and state dir; needs no Kafka or Redis.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from skewless.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def spark():
    from skewless.spark import spark_session

    return spark_session(load_settings(REPO / "skewless.yaml"))


@pytest.fixture
def etl_settings(spark, tmp_path: Path) -> Settings:
    base = load_settings(REPO / "skewless.yaml")
    return base.model_copy(update={"lake_path": str(tmp_path / "lake"), "state_dir": tmp_path / "state"})
