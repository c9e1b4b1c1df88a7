"""The one lake layout: every path of the lake under one root, and one error for a lake
that is not local, whichever stage asks first."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl.batch import plan_range
from feature_repo.specs import VIEWS
from ingestion.verify import verify
from skewless.errors import ConfigError
from skewless.features.feast_objects import view_source
from skewless.lake import duckdb_source, read_events
from skewless.lake_layout import BatchRange, LakeLayout
from skewless.settings import load_settings


def test_every_path_of_the_lake_is_under_its_root_and_state_files_under_the_state_dir(tmp_path):
    layout = LakeLayout(tmp_path / "lake", tmp_path / "state")
    batch = BatchRange("tx", 2, 0, 9)
    lake_paths = [layout.raw_dir("tx"), layout.date_dir("tx", "2026-05-01"), layout.dead_letter_dir("tx"),
                  layout.manifest_path(batch), layout.features_dir("user_spend")]
    assert all(p.is_relative_to(tmp_path / "lake") for p in lake_paths)
    assert layout.date_dir("tx", "2026-05-01").parts[-2:] == ("tx", "date=2026-05-01")
    assert layout.compactions_dir("tx", "2026-05-01").is_relative_to(tmp_path / "lake")
    assert {layout.etl_state_path.parent, layout.recomputed_path.parent} == {tmp_path / "state"}
    assert layout.features_uri("user_spend") == str(tmp_path / "lake" / "features" / "user_spend")


def test_a_file_uri_is_the_same_local_lake_and_spark_and_feast_keep_the_uri(tmp_path):
    layout = LakeLayout(f"file://{tmp_path}/lake")
    assert layout.root == tmp_path / "lake"
    assert layout.raw_dir("tx") == tmp_path / "lake" / "raw" / "tx"
    assert layout.features_uri("v") == f"file://{tmp_path}/lake/features/v"


@pytest.mark.parametrize("lake", ["s3://bucket/lake", "s3a://key:secret-pw@bucket/lake", "gs://b/lake",
                                  "file://otherhost/lake"])
def test_a_lake_that_is_not_local_is_refused_with_one_error_by_every_stage(tmp_path, lake):
    settings = load_settings(None).model_copy(update={"lake_path": lake, "state_dir": tmp_path / "state"})
    attempts = {
        "layout": lambda: LakeLayout(lake),
        "ingest verify": lambda: verify(settings, check_kafka=False),
        "etl plan": lambda: plan_range(settings, VIEWS, None, None),
        "pyarrow reader": lambda: read_events(lake, "tx", "event_time"),
        "duckdb reader": lambda: duckdb_source(lake, "tx"),
        "feast source": lambda: view_source(VIEWS[0], lake),
    }
    messages = set()
    for who, attempt in attempts.items():
        try:
            attempt()
        except ConfigError as exc:
            messages.add(str(exc))
        else:
            pytest.fail(f"{who} accepted the lake {lake}")
    assert len(messages) == 1, messages  # the same words from every stage
    (message,) = messages
    assert "must be local (a path or a file:// URI)" in message and "secret-pw" not in message


def test_without_a_state_dir_the_state_files_are_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="LakeLayout.of"):
        LakeLayout(tmp_path).etl_state_path
    assert isinstance(LakeLayout(tmp_path).root, Path)
