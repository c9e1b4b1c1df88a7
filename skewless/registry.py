"""Model registry on MLflow: register a version, promote it to "champion", load the champion;
aliases (``champion``, ``challenger``; MLflow's stages are deprecated) and any version by number.

Tracking and the registry share one MLflow backend (``settings.mlflow_tracking_uri()``,
SQLite under the state dir by default). Artifacts go under ``<state_dir>/mlartifacts``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from skewless.errors import SkewlessError
from skewless.model_artifact import ModelArtifact
from skewless.settings import Settings

CHAMPION = "champion"
CHALLENGER = "challenger"


class ModelNotFoundError(SkewlessError):
    http_status = 503


def mlflow_client(settings: Settings):
    import mlflow
    from mlflow.tracking import MlflowClient

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri())
    mlflow.set_registry_uri(settings.mlflow_tracking_uri())
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri(), registry_uri=settings.mlflow_tracking_uri())


def ensure_experiment(settings: Settings, name: str) -> str:
    client = mlflow_client(settings)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = (settings.state_dir / "mlartifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def register(settings: Settings, run_id: str, artifact_path: str = "model") -> str:
    """Register the run's model artifact as a new version of ``training.model_name``."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(settings)
    name = settings.training.model_name
    try:
        client.create_registered_model(name)
    except MlflowException:
        pass  # already registered
    run = client.get_run(run_id)
    mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/{artifact_path}", run_id=run_id)
    return str(mv.version)


def promote(settings: Settings, version: str | None = None) -> dict[str, Any]:
    """Make ``version`` (default: the newest) the champion that serving loads."""
    client = mlflow_client(settings)
    name = settings.training.model_name
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        raise ModelNotFoundError(f"no versions of model '{name}' are registered", "train one with: skewless train")
    if version is None:
        version = str(max(int(v.version) for v in versions))
    if version not in {str(v.version) for v in versions}:
        raise ModelNotFoundError(f"model '{name}' has no version {version}")
    client.set_registered_model_alias(name, CHAMPION, version)
    return {"model": name, "version": version, "alias": CHAMPION}


def load_champion(settings: Settings) -> ModelArtifact:
    """Download and load the champion's artifact."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow_client(settings)
    name = settings.training.model_name
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}@{CHAMPION}", dst_path=tempfile.mkdtemp(prefix="skewless-model-")
        )
    except MlflowException as exc:
        raise ModelNotFoundError(
            f"model '{name}' has no champion", "train and promote one with: skewless train --promote"
        ) from exc
    return ModelArtifact.load(Path(local))


def alias_version(settings: Settings, alias: str) -> str | None:
    """The registered version holding ``alias``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow_client(settings).get_model_version_by_alias(settings.training.model_name, alias).version)
    except MlflowException:
        return None


def set_alias(settings: Settings, alias: str, version: str) -> None:
    mlflow_client(settings).set_registered_model_alias(settings.training.model_name, alias, version)


def version_run(settings: Settings, version: str) -> str:
    """The MLflow run that registered ``version``."""
    return str(mlflow_client(settings).get_model_version(settings.training.model_name, version).run_id)


def load_version(settings: Settings, version: str) -> ModelArtifact:
    """Download and load registered ``version``'s artifact."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow_client(settings)
    name = settings.training.model_name
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=tempfile.mkdtemp(prefix="skewless-model-"))
    except MlflowException as exc:
        raise ModelNotFoundError(f"model '{name}' has no version {version}") from exc
    return ModelArtifact.load(Path(local))
