"""The Feast store of the project, configured from settings, and its operations:
apply (registry), materialize (offline tables -> online store), get (online lookup)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from skewless.errors import ConfigError, ServiceError
from skewless.settings import Settings


def redis_connection_string(settings: Settings) -> str:
    """``redis://[:pw@]host:port/db`` -> Feast's ``host:port,db=N[,password=...]``."""
    url = urlparse(settings.redis_url)
    if url.scheme not in ("redis", "rediss"):
        raise ConfigError(f"redis_url must start with redis:// or rediss://, got {settings.redis_url!r}")
    parts = [f"{url.hostname or 'localhost'}:{url.port or 6379}"]
    db = (url.path or "/0").strip("/") or "0"
    parts.append(f"db={db}")
    password = settings.redis_password.get_secret_value() if settings.redis_password else url.password
    if password:
        parts.append(f"password={password}")
    if url.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def repo_config(settings: Settings):
    """feature_store.yaml with the settings applied (registry, online store)."""
    from feast.repo_config import load_repo_config

    repo = Path(settings.feature_repo_path)
    if not (repo / "feature_store.yaml").is_file():
        raise ConfigError(f"no feature_store.yaml in feature_repo_path {repo}")
    config = load_repo_config(repo, repo / "feature_store.yaml")
    registry_path = settings.state_dir / "feast" / "registry.db"
    registry_path.parent.mkdir(parents=True, exist_ok=True)
    online = ({"type": "redis", "connection_string": redis_connection_string(settings)}
              if settings.online_store == "redis"
              else {"type": "sqlite", "path": str(settings.state_dir / "feast" / "online.db")})
    data = config.model_dump(by_alias=True, exclude_none=True) if hasattr(config, "model_dump") else config.dict()
    data["project"] = settings.feast_project
    data["registry"] = {"registry_type": "file", "path": str(registry_path)}
    data["online_store"] = online
    data["offline_store"] = {"type": settings.offline_store}
    data.pop("repo_path", None)
    from feast.repo_config import RepoConfig

    cfg = RepoConfig(**{k: v for k, v in data.items() if k in ("project", "provider", "registry", "online_store",
                                                                   "offline_store", "entity_key_serialization_version")})
    cfg.repo_path = repo
    return cfg


def feature_store(settings: Settings):
    from feast import FeatureStore

    return FeatureStore(config=repo_config(settings))


def objects(settings: Settings) -> dict[str, Any]:
    from feature_repo.specs import ENTITIES, SERVICES, VIEWS
    from skewless.features.feast_objects import build

    return build(ENTITIES, VIEWS, SERVICES, settings.lake_path)


def apply(settings: Settings, store=None) -> dict[str, Any]:
    store = store or feature_store(settings)
    objs = objects(settings)
    store.apply(list(objs.values()))
    return {"project": store.project, "applied": sorted(objs), "registry": str(settings.state_dir / "feast" / "registry.db")}


def _check_online(settings: Settings) -> None:
    if settings.online_store != "redis":
        return
    import redis

    try:
        redis.Redis.from_url(settings.redis_url, socket_timeout=2,
                             password=settings.redis_password.get_secret_value() if settings.redis_password else None).ping()
    except redis.RedisError as exc:
        raise ServiceError(f"Redis does not answer at {settings.redis_url}: {exc}",
                           "start it with: skewless services up (or set online_store: sqlite)") from exc


def materialize(settings: Settings, end: datetime | None = None, store=None, full: bool = False) -> dict[str, Any]:
    """Materialize every feature view up to ``end`` (default: now): incrementally, or with
    ``full`` from scratch — needed after a view's features change, because the online
    store keeps a row whose timestamp is not older than the incoming one."""
    _check_online(settings)
    store = store or feature_store(settings)
    end = end or datetime.now(timezone.utc)
    t0 = time.perf_counter()
    if full:
        views = store.list_feature_views()
        store._get_provider().teardown_infra(store.project, tables=views, entities=store.list_entities())
        store.materialize(start_date=datetime(1970, 1, 2, tzinfo=timezone.utc), end_date=end)
    else:
        store.materialize_incremental(end_date=end)
    elapsed = time.perf_counter() - t0
    return {"end": end.isoformat(), "seconds": round(elapsed, 2), "online_store": settings.online_store, "full": full}


def get_online(settings: Settings, entity: dict[str, Any], request: dict[str, Any] | None = None,
               feature_service: str | None = None, store=None) -> dict[str, Any]:
    """Online features for one entity: every view whose keys are given (and the request
    transforms whose inputs are all available), or a whole FeatureService."""
    from feature_repo.specs import SERVICES, VIEWS

    _check_online(settings)
    store = store or feature_store(settings)
    row = {**entity, **(request or {})}
    if feature_service:
        features: Any = store.get_feature_service(feature_service)
    else:
        views = [v for v in VIEWS if set(v.join_keys) <= set(entity)]
        if not views:
            keys = sorted({k for v in VIEWS for k in v.join_keys})
            raise ConfigError(f"no feature view is keyed by {sorted(entity)}", f"use one of: {', '.join(keys)}")
        features = [f"{v.name}:{f}" for v in views for f in v.features]
        names = {v.name for v in views}
        transforms = {t.name: t for s in SERVICES for t in s.transforms}.values()
        for t in transforms:
            if {v for v, _ in t.inputs} <= names and set(t.request_fields) <= set(row):
                features += [f"{t.name}:{o}" for o in t.outputs]
    result = store.get_online_features(features=features, entity_rows=[row], full_feature_names=True).to_dict()
    return {k: v[0] for k, v in result.items()}
