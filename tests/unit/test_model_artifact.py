"""A model artifact's errors are ours (``DataError``), with what is missing and where."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier

from skewless.errors import DataError
from skewless.model_artifact import ModelArtifact


def _artifact() -> ModelArtifact:
    pipeline = DummyClassifier(strategy="prior").fit([[0.0, 0.0], [1.0, 1.0]], [0, 1])
    return ModelArtifact(pipeline=pipeline, model_name="m", version="3", feature_service="svc", feast_project="p",
                         features=["a", "b"], threshold=0.5, trained_at="2026-01-01T00:00:00Z")


def test_scoring_rows_without_a_feature_names_the_features_and_the_service():
    with pytest.raises(DataError, match=r"model m v3 needs features \['b'\].*feature service svc"):
        _artifact().score(pd.DataFrame({"a": [1.0]}))
    assert _artifact().score(pd.DataFrame({"b": [1.0], "a": [0.0]})).shape == (1,)


def test_loading_a_directory_without_an_artifact_says_which_files_are_missing(tmp_path):
    with pytest.raises(DataError, match="no model artifact in .*model.json and model.joblib missing"):
        ModelArtifact.load(tmp_path)
    saved = _artifact().save(tmp_path / "model")
    assert ModelArtifact.load(saved).features == ["a", "b"]
    (saved / "model.joblib").unlink()
    with pytest.raises(DataError, match="model.joblib missing"):
        ModelArtifact.load(saved)
