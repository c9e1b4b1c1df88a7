"""Experiment tracking with MLflow: parameters, metrics, the data window, plots, the model."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skewless.design_effect import cluster_ids, design_effects
from skewless.histograms import REFERENCE_ARTIFACT, SCORE, NumericHistogram, reference_document, summarize
from skewless.model_artifact import ModelArtifact
from skewless.registry import ensure_experiment, mlflow_client
from skewless.settings import Settings

EXPERIMENT = "skewless-fraud"


def pr_curve_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """Precision-recall curves of every candidate on the test split, drawn after the choice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, (y, s) in curves.items():
        p, r, _ = precision_recall_curve(y, s)
        ax.plot(r, p, label=name)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Precision-recall on the test split (reported, not used to choose)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def importance_plot(names: list[str], importances: np.ndarray, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(importances)
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(names) + 1.2))
    ax.barh([names[i] for i in order], importances[order])
    ax.set_xlabel("permutation importance (drop in PR-AUC)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log_run(settings: Settings, params: dict[str, Any], metrics: dict[str, float], artifact: ModelArtifact,
            plots: dict[str, Path], tags: dict[str, str]) -> str:
    """One MLflow run holding everything about this training; returns the run id."""
    import mlflow

    mlflow_client(settings)
    experiment_id = ensure_experiment(settings, EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment_id, tags=tags) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})
        for p in plots.values():
            mlflow.log_artifact(str(p), artifact_path="plots")
        with tempfile.TemporaryDirectory() as tmp:
            artifact.save(Path(tmp) / "model")
            mlflow.log_artifacts(str(Path(tmp) / "model"), artifact_path="model")
        return run.info.run_id


def log_drift_reference(settings: Settings, run_id: str, data: pd.DataFrame, features: list[str],
                        scores: np.ndarray, **meta: Any) -> dict[str, Any]:
    """Save the drift reference with the run (``REFERENCE_ARTIFACT``): the histogram of each
    model feature over the training set, and of the model's scores on held-out rows (what
    live scores should look like; scores on the rows it was fitted on are overconfident)."""
    mon = settings.monitoring
    kinds = {n: mon.features[n].kind for n in features if n in mon.features and mon.features[n].kind}
    hists = summarize(data[features], kinds, mon.bins, mon.max_categories)  # type: ignore[arg-type]
    hists[SCORE] = NumericHistogram.reference(np.asarray(scores, dtype=np.float64), mon.bins, name=SCORE)
    # How dependent the training rows are (a card's rows within one block of time are one cluster), per
    # feature and signal: monitoring's p-values allow for it. The score's held-out rows carry no entity
    # here: monitoring takes the live sample's figure for it.
    if mon.cluster_key and mon.cluster_key in data.columns and "event_timestamp" in data.columns:
        clusters = cluster_ids(data[mon.cluster_key], data["event_timestamp"], mon.cluster_block)
        meta["design_effects"] = design_effects({n: hists[n] for n in features}, data, clusters)
        meta["clusters"] = {"key": mon.cluster_key, "block": mon.cluster_block}
    doc = reference_document(hists, rows=len(data), score_rows=len(scores), features=list(features), **meta)
    mlflow_client(settings).log_dict(run_id, doc, REFERENCE_ARTIFACT)
    return doc

