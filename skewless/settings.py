"""One typed settings object for the whole platform.

Loaded from ``skewless.yaml`` (the nearest one found upward from the working directory,
or the file given with ``--config``), then overridden by environment variables named
``SKEWLESS_<KEY>`` (nested keys joined by ``__``, e.g. ``SKEWLESS_KAFKA__BOOTSTRAP_SERVERS``).
Unknown keys are rejected with the key named. Secrets (Kafka SASL password, Redis
password) come only from the environment.

Relative paths are resolved against the directory holding the settings file (or the
working directory when there is none), so every command works from any directory.
Scaling out is a settings change: a Kafka bootstrap list, a Spark master URL, a Redis
URL, a lake URI on object storage.

Settings are passed explicitly; there is no module-level instance.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from skewless.errors import ConfigError

CONFIG_FILE_NAME = "skewless.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KafkaSettings(_Section):
    # A comma-separated string is accepted too (handy in SKEWLESS_KAFKA__BOOTSTRAP_SERVERS).
    bootstrap_servers: Annotated[list[str], NoDecode] = ["localhost:9092"]
    partitions: int = Field(4, ge=1, description="partitions for topics the project creates")
    replication_factor: int = Field(1, ge=1)
    consumer_group: str = "skewless-ingest"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    # Secret: read from SKEWLESS_KAFKA__SASL_PASSWORD only (see Settings._reject_file_secrets).
    sasl_password: SecretStr | None = None

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [s.strip() for s in value.split(",") if s.strip()]
        return value

    def client_config(self) -> dict[str, Any]:
        """Connection keyword arguments shared by kafka-python producers, consumers and admins."""
        cfg: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            cfg["sasl_mechanism"] = self.sasl_mechanism
            cfg["sasl_plain_username"] = self.sasl_username
            cfg["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return cfg


class TopicSettings(_Section):
    """Kafka topic name for each event contract."""

    transactions: str = "transactions"
    labels: str = "labels"
    predictions: str = "predictions"

    def by_contract(self) -> dict[str, str]:
        return {"transactions": self.transactions, "labels": self.labels, "predictions": self.predictions}


class IngestSettings(_Section):
    """Kafka -> lake consumer tuning. Rotation is by records/bytes, never wall-clock."""

    # Open batches hold decoded rows in memory: peak memory ~ partitions x flush_records rows.
    flush_records: int = Field(20_000, ge=1, description="records per Kafka partition per batch")
    flush_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="message bytes per batch")
    max_hours_per_batch: int = Field(
        72, ge=1, description="event-time rotation: close a batch once it spans this many hours"
    )
    row_group_records: int = Field(50_000, ge=1000)
    max_poll_records: int = Field(5_000, ge=1)
    compression: str = "zstd"


class TrainingSettings(_Section):
    """Model training, evaluation and tracking."""

    feature_service: str = "fraud_model_v1"
    pit_engine: Literal["asof", "spark", "feast"] = Field(
        "asof", description="training-set join, all tested equal value for value: DuckDB ASOF joins over "
        "Feast's registry (the fastest: on the demo data 10-18x the Spark job on one machine and 120-210x "
        "Feast's duckdb store, see benchmarks/README.md), the same join as a Spark job on spark_master "
        "(for data beyond one machine), or Feast's own get_historical_features on offline_store",
    )
    model_name: str = "skewless-fraud"
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default sqlite:///<state_dir>/mlflow.db"
    )
    review_cost: float = Field(5.0, ge=0, description="cost of reviewing one false alarm")
    target_precision: float = Field(0.8, gt=0, lt=1, description="for recall at fixed precision")
    label_maturity_days: float = Field(
        10.0, ge=0,
        description="train only on transactions at least this old at the cutoff: younger ones have not had "
        "time to be charged back, and would teach the model that their fraud is legitimate",
    )
    seed: int = 0


class ServingSettings(_Section):
    """The online API (``skewless serve``)."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1)
    # Secret: read from SKEWLESS_SERVING__API_KEY only. When set, every route but /healthz,
    # /docs and /openapi.json needs it (header X-API-Key or Authorization: Bearer).
    api_key: SecretStr | None = None
    max_entities: int = Field(1000, ge=1, description="largest /v1/features batch; more is a 413")
    redis_timeout_s: float = Field(
        0.5, gt=0, description="bound on each wait for the online store: past it the request is a quick 503"
    )
    reload_interval_s: float = Field(
        10.0, gt=0, description="how often the service asks the registry whether a new champion was promoted"
    )
    log_predictions: bool = Field(True, description="send every prediction to the predictions topic")
    log_queue_size: int = Field(
        10_000, ge=1, description="predictions waiting for Kafka; when full, new ones are counted as dropped"
    )


class ServicesSettings(_Section):
    """The local development services started by ``skewless services up``."""

    kafka_version: str = "4.1.1"
    kafka_host: str = "localhost"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_heap: str = "768m"
    redis_port: int = 6379
    jar_cache_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "skewless"
    )
    start_timeout_s: float = 90.0


def _default_feature_repo() -> Path:
    spec = importlib.util.find_spec("feature_repo")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path("feature_repo")


class Settings(BaseSettings):
    """Every path, address and size the platform uses."""

    model_config = SettingsConfigDict(
        env_prefix="SKEWLESS_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    state_dir: Path = Path(".skewless")
    lake_path: str = ".skewless/lake"
    feature_repo_path: Path = Field(default_factory=_default_feature_repo)
    redis_url: str = "redis://localhost:6379/0"
    redis_password: SecretStr | None = None
    feast_project: str = Field("skewless", pattern=r"^[a-z][a-z0-9_]*$", description="Feast project name")
    offline_store: Literal["duckdb", "file"] = Field(
        "duckdb", description="Feast offline store for training sets (duckdb: fastest measured, see bench pit)"
    )
    online_store: Literal["redis", "sqlite"] = Field(
        "redis", description="Feast online store: Redis at redis_url, or Feast's embedded SQLite"
    )
    spark_master: str = "local[*]"
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    ingest: IngestSettings = IngestSettings()
    training: TrainingSettings = TrainingSettings()
    serving: ServingSettings = ServingSettings()
    services: ServicesSettings = ServicesSettings()

    # Where the values came from (not a setting): the file, or None for defaults only.
    config_file: Path | None = Field(default=None, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file (which arrives as init kwargs).
        return (env_settings, init_settings)

    def resolve(self, base: Path) -> "Settings":
        """Make relative local paths absolute against ``base``."""
        updates: dict[str, Any] = {}
        for name in ("state_dir", "feature_repo_path"):
            p = getattr(self, name)
            if not p.is_absolute():
                updates[name] = (base / p).resolve()
        if not is_uri(self.lake_path) and not Path(self.lake_path).is_absolute():
            updates["lake_path"] = str((base / self.lake_path).resolve())
        return self.model_copy(update=updates)

    def mlflow_tracking_uri(self) -> str:
        return self.training.tracking_uri or f"sqlite:///{self.state_dir / 'mlflow.db'}"

    def public_dict(self) -> dict[str, Any]:
        """JSON-ready settings with secrets masked."""
        data = self.model_dump(mode="json", exclude={"config_file"})
        data["config_file"] = str(self.config_file) if self.config_file else None
        return data


def is_uri(path: str) -> bool:
    return "://" in path


SECRET_KEYS = {("kafka", "sasl_password"), ("redis_password",), ("serving", "api_key")}


def find_config_file(start: Path | None = None) -> Path | None:
    """The nearest ``skewless.yaml`` at or above ``start`` (default: cwd)."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        candidate = d / CONFIG_FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def _reject_secrets(data: dict[str, Any], path: Path) -> None:
    for keys in SECRET_KEYS:
        node: Any = data
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if node is not None:
            env = "SKEWLESS_" + "__".join(k.upper() for k in keys)
            raise ConfigError(
                f"{path}: secret '{'.'.join(keys)}' must not be stored in the settings file",
                f"set the environment variable {env} instead",
            )


def _format_validation_error(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}'")
        else:
            parts.append(f"'{key}': {err['msg']}")
    return f"{source}: " + "; ".join(parts)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Load settings from ``config`` (or the nearest skewless.yaml), env, then ``overrides``."""
    path = Path(config) if config else find_config_file()
    data: dict[str, Any] = {}
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"settings file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
        _reject_secrets(loaded, path)
        data.update(loaded)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, str(path or "settings"))) from exc
    except SettingsError as exc:
        raise ConfigError(f"invalid SKEWLESS_* environment variable: {exc}") from exc
    if overrides:
        merged = settings.model_dump()
        for k, v in overrides.items():
            merged[k] = v
        try:
            settings = Settings.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(_format_validation_error(exc, "overrides")) from exc
    base = path.parent.resolve() if path else Path.cwd()
    return settings.resolve(base).model_copy(update={"config_file": path.resolve() if path else None})
