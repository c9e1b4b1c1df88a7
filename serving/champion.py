"""The model being served: the registry's champion, and the feature plan it was trained on.

``ChampionWatcher.refresh`` asks the registry which version holds the champion alias
(one cheap query) and loads it only when that changed, so a promotion reaches a
running service within ``serving.reload_interval_s``, without a restart. The model and
its plan are swapped together as one object, so no request ever scores one model's
vector with another's features.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable

from serving.online_reader import FeaturePlan
from serving.scorer import Scorer, build_scorer
from skewless.model_artifact import ModelArtifact
from skewless.registry import CHAMPION, ModelNotFoundError, load_champion, mlflow_client
from skewless.settings import Settings

log = logging.getLogger(__name__)
# The registry download would draw a progress bar in the server log on every reload.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@dataclass(frozen=True)
class Champion:
    artifact: ModelArtifact
    registry_version: str
    plan: FeaturePlan
    # Model inputs that are not FeatureService features (request fields such as amount).
    request_inputs: tuple[str, ...]
    # The model's scores, compiled once for this model (``serving.scorer``).
    scorer: Scorer


class ChampionWatcher:
    def __init__(self, settings: Settings, store: Any,
                 loader: Callable[[Settings], ModelArtifact] = load_champion):
        self.settings = settings
        self.store = store
        self.loader = loader
        self.current: Champion | None = None
        self.error: str | None = None
        self.reloads = 0
        self._lock = threading.Lock()

    def champion_version(self) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            mv = mlflow_client(self.settings).get_model_version_by_alias(self.settings.training.model_name, CHAMPION)
        except MlflowException:
            return None
        return str(mv.version)

    def refresh(self) -> bool:
        """Load the champion if it changed; True when a new one is now served."""
        with self._lock:
            try:
                version = self.champion_version()
                if version is None:
                    raise ModelNotFoundError(f"model '{self.settings.training.model_name}' has no champion",
                                             "train and promote one with: skewless train --promote")
                if self.current is not None and self.current.registry_version == version:
                    return False
                artifact = self.loader(self.settings)
                plan = FeaturePlan.for_service(self.store, artifact.feature_service)
                extra = tuple(f for f in artifact.features if f not in set(plan.names))
                missing = [f for f in extra if f not in plan.request_fields]
                if missing:
                    raise ModelNotFoundError(
                        f"model v{artifact.version} needs {missing}, which neither FeatureService "
                        f"{artifact.feature_service!r} nor the request provides")
                scorer = (build_scorer(artifact.pipeline) if self.settings.serving.compiled_scorer
                          else Scorer(artifact.pipeline, "scikit-learn predict_proba (serving.compiled_scorer off)"))
            except Exception as exc:  # noqa: BLE001 - keep serving the old model; report on /readyz
                self.error = str(exc)
                log.warning("champion not loaded: %s", exc)
                return False
            previous = self.current
            self.current = Champion(artifact, version, plan, extra, scorer)
            self.error = None
            if previous is not None:
                self.reloads += 1
            log.info("serving %s v%s (registry version %s), scoring with %s", artifact.model_name, artifact.version,
                     version, scorer.description)
            return True
