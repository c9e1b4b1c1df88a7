"""Serving's errors are one family: each ``SkewlessError`` answers with its own
``http_status`` through the app's one handler. An unknown FeatureService is the request's
fault (422); a registry that cannot be read is not (503), whatever Feast raised."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.champion import ChampionWatcher
from serving.online_reader import PlanError
from serving.service import OnlineStoreDown, RegistryUnavailable
from skewless.errors import SkewlessError
from skewless.settings import load_settings
from tests.conftest import REPO
from tests.isolation import isolated_settings


class BrokenRegistry:
    """A Feast store whose registry answers ``get_feature_service`` with ``error``."""

    project = "p"

    def __init__(self, error: Exception):
        self.error = error

    def list_feature_views(self) -> list:
        return []

    def list_on_demand_feature_views(self) -> list:
        raise self.error

    def get_feature_service(self, name: str) -> Any:
        raise self.error


def _client(tmp_path, error: Exception) -> TestClient:
    settings = isolated_settings(load_settings(REPO / "skewless.yaml"), tmp_path, serving={"log_predictions": False})
    store = BrokenRegistry(error)
    app = create_app(settings, store=store, watcher=ChampionWatcher(settings, store))
    return TestClient(app, raise_server_exceptions=False)  # no lifespan: no champion, no Redis needed


def test_the_read_paths_errors_are_skewless_errors_with_their_status():
    assert issubclass(PlanError, SkewlessError) and PlanError("x").http_status == 422
    assert issubclass(OnlineStoreDown, SkewlessError) and OnlineStoreDown("x").http_status == 503
    assert issubclass(RegistryUnavailable, SkewlessError) and RegistryUnavailable("x").http_status == 503


def test_an_unknown_feature_service_is_a_422(tmp_path):
    from feast.errors import FeatureServiceNotFoundException

    client = _client(tmp_path, FeatureServiceNotFoundException("nope", "p"))
    r = client.post("/v1/features", json={"feature_service": "nope", "entities": []})
    assert r.status_code == 422 and r.json() == {"detail": "unknown feature service 'nope'"}


@pytest.mark.parametrize("error", [OSError("registry.db: input/output error"), KeyError("project"),
                                   ValueError("Error parsing message")])
def test_a_registry_that_cannot_be_read_is_a_503_not_an_unknown_service(tmp_path, error):
    client = _client(tmp_path, error)
    for body in ({"feature_service": "fraud_model_v1", "entities": []}, {"features": ["v:f"], "entities": []}):
        r = client.post("/v1/features", json=body)
        assert r.status_code == 503, (body, r.text)
        detail = r.json()["detail"]
        assert detail.startswith("feature registry unavailable: ") and type(error).__name__ in detail
        assert "unknown" not in detail
