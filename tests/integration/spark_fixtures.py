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


def simulated_lake(tmp: Path, *, events: int, seed: int, start, days: int) -> Settings:
    """Settings of a lake under ``tmp`` holding ``events`` simulated transactions (and their
    labels) and every view's offline tables, from one batch run."""
    from etl.batch import run_batch
    from feature_repo.specs import VIEWS
    from tests.integration.lake_fixtures import land_simulation

    settings = load_settings(REPO / "skewless.yaml").model_copy(
        update={"lake_path": str(tmp / "lake"), "state_dir": tmp / "state"})
    land_simulation(settings, events=events, seed=seed, start=start, days=days)
    run_batch(settings, views=VIEWS)
    return settings
