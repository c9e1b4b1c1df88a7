"""The saved model: a scikit-learn pipeline plus everything serving needs to use it right.

It records the Feast FeatureService it was trained on, the feature list *in order*, the
decision threshold, and a version. Training writes it; serving loads it (neither imports
the other: this module is the contract between them).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from skewless.errors import DataError

MODEL_FILE = "model.joblib"
META_FILE = "model.json"


@dataclass
class ModelArtifact:
    pipeline: Any
    model_name: str
    version: str
    feature_service: str
    feast_project: str
    features: list[str]
    threshold: float
    trained_at: str
    data_window: dict[str, str | None] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    candidate: str = ""

    def metadata(self) -> dict[str, Any]:
        meta = asdict(self)
        meta.pop("pipeline")
        return meta

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        joblib.dump(self.pipeline, directory / MODEL_FILE)
        (directory / META_FILE).write_text(json.dumps(self.metadata(), indent=2, default=str))
        return directory

    @classmethod
    def load(cls, directory: Path) -> "ModelArtifact":
        directory = Path(directory)
        missing = [name for name in (META_FILE, MODEL_FILE) if not (directory / name).is_file()]
        if missing:
            raise DataError(f"no model artifact in {directory}: {' and '.join(missing)} missing",
                            "a model directory is written by `skewless train`")
        meta = json.loads((directory / META_FILE).read_text())
        return cls(pipeline=joblib.load(directory / MODEL_FILE), **meta)

    def matrix(self, rows: pd.DataFrame) -> np.ndarray:
        missing = [f for f in self.features if f not in rows.columns]
        if missing:
            raise DataError(f"model {self.model_name} v{self.version} needs features {missing}, which the rows lack",
                            f"the rows must hold every feature of the feature service {self.feature_service}")
        return rows[self.features].apply(pd.to_numeric, errors="coerce").astype("float64").to_numpy()

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        """Fraud probability for each row (features by name, any column order)."""
        return self.pipeline.predict_proba(self.matrix(rows))[:, 1]
