"""One typed settings object for the whole platform.

Loaded from ``skewless.yaml`` (the nearest one found upward from the working directory,
or the file given with ``--config``), then overridden by environment variables named
``SKEWLESS_<KEY>`` (nested keys joined by ``__``, e.g. ``SKEWLESS_KAFKA__BOOTSTRAP_SERVERS``).
Unknown keys, in the file or as ``SKEWLESS_*`` variables, are rejected by name (with the
closest valid one); a bad value is blamed on the variable or the file it came from.
Ports, ``host:port`` lists, the Redis URL and the Spark master URL are checked for form
when settings load. Secrets (Kafka SASL password, Redis password, API key) come only
from the environment, and are masked when settings are shown.

Relative paths are resolved against the directory holding the settings file (or the
working directory when there is none), so every command works from any directory.
Scaling out is a settings change: a Kafka bootstrap list, a Spark master URL, a Redis
URL. The lake is local for now (a path or a ``file://`` URI; see ``skewless.lake_layout``).

Settings are passed explicitly; there is no module-level instance.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from skewless.errors import ConfigError
from skewless.settings_checks import (
    check_host_port, check_redis_url, check_spark_master, mask_url_password, url_has_password,
)

CONFIG_FILE_NAME = "skewless.yaml"
ENV_PREFIX = "SKEWLESS_"

# SKEWLESS_* variables the project itself reads that are not settings.
PROCESS_VARIABLES = {
    "SKEWLESS_SERVE_CONFIG": "the settings file `skewless serve` hands to its worker processes",
    "SKEWLESS_INGEST_CRASH_AT": "fault injection for the ingestion crash tests (ingestion/faults.py)",
}

Port = Annotated[int, Field(ge=1, le=65535)]


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

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one host:port")
        return [check_host_port(entry) for entry in value]

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
    """Kafka -> lake consumer tuning. A batch closes by records, bytes, event dates spanned, or age."""

    # Open batches hold decoded rows in memory: peak memory ~ partitions x flush_records rows.
    flush_records: int = Field(20_000, ge=1, description="records per Kafka partition per batch")
    flush_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="message bytes per batch")
    max_dates_per_batch: int = Field(
        31, ge=1, description="event-time rotation: close a batch once it spans this many event dates (a batch "
        "writes one file per event date it holds, so this bounds the files a batch writes)"
    )
    max_batch_age_s: float = Field(
        60.0, gt=0,
        description="wall-clock bound on how long an event waits in an open batch: a batch is landed this many "
        "seconds after its first record arrived, however slowly records come (a steady trickle never "
        "goes quiet for the idle flush)")
    row_group_records: int = Field(50_000, ge=1000)
    max_poll_records: int = Field(5_000, ge=1)
    partition_fetch_bytes: int = Field(
        8 * 1024 * 1024, ge=1024,
        description="bytes a fetch asks per partition (Kafka's max.partition.fetch.bytes): fetched records of up to "
        "partitions x this wait in memory beside the open batches; larger fetches land a backlog faster (benchmarks/"
        "README.md#ingest: 8 MiB vs Kafka's default 1 MiB, 100k events 1.72 vs 1.96 s median, 1M events 440-461 vs "
        "350-368 MB peak); a record batch larger than this still comes whole")
    compression: str = "zstd"
    # Data quality (skewless.event_checks): an event time later than its Kafka message's
    # timestamp by more than this is implausible (a producer's clock or unit error).
    max_event_time_ahead_s: float = Field(
        3600.0, gt=0, description="dead-letter events whose time is this far ahead of their Kafka timestamp")


class CompactionSettings(_Section):
    """``skewless lake compact``: a date partition's small raw files rewritten into large ones."""

    target_file_bytes: int = Field(
        128 * 1024 * 1024, ge=1024, description="size of a compacted file: inputs are packed into outputs of about "
        "this many bytes (Parquet, as written)")
    small_file_bytes: int = Field(
        32 * 1024 * 1024, ge=1, description="files smaller than this are compacted (larger ones are left as they are)")
    grace_s: float = Field(
        3600.0, ge=0, description="a compaction's inputs are deleted this long after it committed (by a later run): "
        "a reader that listed them just before the commit (a Spark job mid-scan) still reads them")


class StreamSettings(_Section):
    """The streaming feature job (``skewless etl stream``): Kafka -> online store."""

    trigger_ms: int = Field(
        0, ge=0, description="micro-batch interval in ms; 0 starts the next batch as soon as one ends")
    max_offsets_per_trigger: int = Field(
        200_000, ge=1, description="records per micro-batch at most (a backlog is replayed in batches this big)")
    dedupe_horizon_s: int = Field(
        900, ge=0, description="an event id seen again within this many seconds of arrival is a retry and dropped")
    enrich_horizon_s: int = Field(
        45 * 86400, ge=0,
        description="how long a transaction's enrichment columns are kept for labels that arrive later")
    idle_publish_ms: int = Field(
        100, ge=10, description="how often due rows (windows decaying without new events) are published")
    state_cache_entities: int = Field(
        1_000_000, ge=0, description="per view, the entities whose state the job also keeps in its memory "
        "(Redis holds it all; beyond this many, the least recently written are read back from Redis)")


DUCKDB_MEMORY = r"^[1-9][0-9]*(\.[0-9]+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$"  # DuckDB's memory_limit syntax


class MaterializeSettings(_Section):
    """``skewless features materialize``: offline tables -> online store."""

    batch_rows: int = Field(
        10_000, ge=100, description="entities converted and written to the online store at a time (a slice of "
        "a view's entity keys): with duckdb_memory, bounds materialize's memory")
    duckdb_memory: str = Field(
        "1GB", pattern=DUCKDB_MEMORY,
        description="memory DuckDB may use to find each view's latest rows per entity; it spills the rest to "
        "disk under state_dir/tmp")


class TrainingSettings(_Section):
    """Model training, evaluation and tracking."""

    feature_service: str = "fraud_model_v1"
    pit_engine: Literal["asof", "spark", "feast"] = Field(
        "asof", description="training-set join, all tested equal value for value: DuckDB ASOF joins over "
        "Feast's registry (the fastest: on the demo data 10-18x the Spark job on one machine and 120-210x "
        "Feast's duckdb store, see benchmarks/README.md), the same join as a Spark job on spark_master "
        "(for data beyond one machine), or Feast's own get_historical_features on offline_store",
    )
    duckdb_memory: str = Field(
        "1GB", pattern=DUCKDB_MEMORY,
        description="memory the asof engine's DuckDB joins may use; they spill the rest to disk under "
        "state_dir/tmp, so the training set's peak is this plus the frame it returns")
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
    compiled_scorer: bool = Field(
        True, description="score with the model compiled to NumPy arrays at load (equal to scikit-learn's "
        "predict_proba within 1e-9, ~20x faster per row); false: scikit-learn's own predict_proba"
    )
    log_queue_size: int = Field(
        10_000, ge=1, description="predictions waiting in memory for the log's sender thread; when full, new "
        "ones are counted as dropped"
    )
    log_spill_max_bytes: int = Field(
        256 * 1024 * 1024, ge=0,
        description="predictions Kafka has not acknowledged wait on disk under <state_dir>/prediction-log, up to "
        "this many bytes per server process, and are replayed in order when it answers; past it they are "
        "counted as dropped (0: no spill)",
    )


class FeatureDriftSettings(_Section):
    """One feature's drift settings (``monitoring.features.<name>``); unset keys take the defaults."""

    kind: Literal["numeric", "categorical"] | None = Field(
        None, description="how the feature is compared; default: numeric for numbers, categorical otherwise")
    threshold: float | None = Field(
        None, gt=0, description="smallest drift of the feature's distribution worth flagging: the normalised "
        "Wasserstein distance (numeric) or the Jensen-Shannon distance (categorical)")
    missing_threshold: float | None = Field(
        None, gt=0, le=1, description="smallest change of the feature's missing rate worth flagging")
    ignore: bool = Field(False, description="leave the feature out of drift checks")

    @model_validator(mode="after")
    def _js_at_most_one(self) -> "FeatureDriftSettings":
        if self.kind == "categorical" and self.threshold is not None and self.threshold > 1:
            raise ValueError(f"threshold {self.threshold}: a Jensen-Shannon distance is at most 1")
        return self


class DriftThresholds(_Section):
    """The default smallest drift worth flagging, per statistic. These are effect sizes, whose
    meaning does not depend on the sample size; significance is calibrated separately (alpha)."""

    numeric: float = Field(
        0.1, gt=0, description="Wasserstein-1 distance over the reference's robust standard deviation "
        "(IQR / 1.349): 0.1 is a tenth of a standard deviation (a 0.5 sigma mean shift measures 0.5)")
    categorical: float = Field(
        0.03, gt=0, le=1, description="Jensen-Shannon distance (base 2) between category shares: a 5-point "
        "share shift between two large categories measures about 0.04-0.05")
    missing: float = Field(0.01, gt=0, le=1, description="absolute change of the missing rate (0.01: one point)")


class MonitoringSettings(_Section):
    """Drift detection (``monitoring/drift.py``): per-feature statistics between a reference
    (the champion's training set) and a live sample, each flagged when it is both material
    (at least its threshold) and significant (permutation p-value, Holm-corrected at alpha)."""

    alpha: float = Field(
        0.05, gt=0, le=0.5, description="false-positive budget of one drift check: the probability that it flags "
        "any feature when nothing drifted (Holm's correction over every feature's signals)")
    thresholds: DriftThresholds = DriftThresholds()
    features: dict[str, FeatureDriftSettings] = Field(
        default_factory=dict, description="per-feature overrides, by feature name")
    bins: int = Field(100, ge=10, le=2000, description="quantile bins of a numeric feature's histogram "
                      "(plus finer bins in the 0.5% tails)")
    max_categories: int = Field(100, ge=2, le=100_000, description="categories kept by name in a histogram; "
                                "rarer ones are counted together")
    permutations: int = Field(1000, ge=100, le=1_000_000, description="permutations calibrating each p-value "
                              "(at most; raised to 2 x tests / alpha when a check has many features)")
    window: str = Field("24h", pattern=r"^[1-9][0-9]*[smhd]$",
                        description="live sample of `skewless monitor drift`: the predictions of this last period")
    cluster_key: str | None = Field(
        "user_id", description="entity whose rows are dependent (a card's fraud burst, a customer's habits): rows "
        "of one entity within one cluster_block are one cluster, and drift p-values allow for their design effect; "
        "null: rows are independent")
    cluster_block: str = Field("24h", pattern=r"^[1-9][0-9]*[smhd]$",
                               description="time block of a cluster (the same for the reference and the live sample)")
    seed: int = 0

    @field_validator("features")
    @classmethod
    def _names(cls, value: dict[str, FeatureDriftSettings]) -> dict[str, FeatureDriftSettings]:
        for name in value:
            if not name.strip():
                raise ValueError("a feature name is empty")
        return value

    def for_feature(self, name: str, kind: str) -> tuple[float, float]:
        """The (distribution, missing-rate) thresholds of feature ``name`` compared as ``kind``."""
        own = self.features.get(name)
        default = self.thresholds.categorical if kind == "categorical" else self.thresholds.numeric
        threshold = own.threshold if own is not None and own.threshold is not None else default
        missing = own.missing_threshold if own is not None and own.missing_threshold is not None \
            else self.thresholds.missing
        return threshold, missing


class RetrainSettings(_Section):
    """``skewless retrain``: a challenger trained on the newest mature labelled window, against
    the champion on one frozen holdout after both models' training data (``training.retrain``)."""

    margin: float = Field(
        0.02, ge=0, lt=1, description="the challenger must cut the champion's expected cost on the holdout by at "
        "least this fraction of it (0.02: 2%), with the bootstrap interval of the cost difference clear of zero")
    bootstrap: int = Field(1000, ge=100, le=100_000, description="paired bootstrap resamples of the holdout "
                           "(resampling cards, user_id, so one card's burst of fraud moves together)")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="two-sided level of the bootstrap interval")
    holdout_days: float = Field(
        3.0, gt=0, description="the holdout: the newest mature transactions (at least training.label_maturity_days "
        "old at the cutoff) of this many days; it must start after the champion's training data ends")
    window_days: float | None = Field(
        None, gt=0, description="the challenger's training window: this many days before the holdout "
        "(default: every landed transaction before it)")
    seed: int = 0


class ServicesSettings(_Section):
    """The local development services started by ``skewless services up``."""

    kafka_version: str = "4.1.1"
    kafka_host: str = "localhost"
    kafka_port: Port = 9092
    kafka_controller_port: Port = 9093
    kafka_heap: str = "768m"
    redis_port: Port = 6379
    jar_cache_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "skewless"
    )
    start_timeout_s: float = 90.0

    @model_validator(mode="after")
    def _distinct_ports(self) -> "ServicesSettings":
        ports = {"kafka_port": self.kafka_port, "kafka_controller_port": self.kafka_controller_port,
                 "redis_port": self.redis_port}
        if len(set(ports.values())) < len(ports):
            raise ValueError(f"two services on one port: {ports}")
        return self


def _default_feature_repo() -> Path:
    """The checkout's (or installed tree's) ``feature_repo``, next to this package; it is
    located, not imported (see ``skewless.features.definitions``)."""
    beside = Path(__file__).resolve().parent.parent / "feature_repo"
    return beside if beside.is_dir() else Path("feature_repo")


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
    compaction: CompactionSettings = CompactionSettings()
    stream: StreamSettings = StreamSettings()
    materialize: MaterializeSettings = MaterializeSettings()
    training: TrainingSettings = TrainingSettings()
    serving: ServingSettings = ServingSettings()
    services: ServicesSettings = ServicesSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    retrain: RetrainSettings = RetrainSettings()

    # Where the values came from (not a setting): the file, or None for defaults only.
    config_file: Path | None = Field(default=None, exclude=True)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        return check_redis_url(value)

    @field_validator("spark_master")
    @classmethod
    def _spark_master(cls, value: str) -> str:
        return check_spark_master(value)

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
        # A password written inside a URL is a secret too.
        data["redis_url"] = mask_url_password(data["redis_url"])
        data["lake_path"] = mask_url_password(data["lake_path"])
        if data["training"]["tracking_uri"]:
            data["training"]["tracking_uri"] = mask_url_password(data["training"]["tracking_uri"])
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
            env = ENV_PREFIX + "__".join(k.upper() for k in keys)
            raise ConfigError(
                f"{path}: secret '{'.'.join(keys)}' must not be stored in the settings file",
                f"set the environment variable {env} instead",
            )
    if isinstance(data.get("redis_url"), str) and url_has_password(data["redis_url"]):
        raise ConfigError(
            f"{path}: 'redis_url' holds a password, a secret that must not be stored in the settings file",
            f"set the environment variable {ENV_PREFIX}REDIS_PASSWORD (or {ENV_PREFIX}REDIS_URL) instead",
        )


def settings_variables() -> set[str]:
    """Every ``SKEWLESS_*`` name a setting can be given by: each key, and each section as a
    whole (JSON)."""
    names: set[str] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            if field.exclude:  # config_file: chosen with --config, not a setting
                continue
            names.add(prefix + name.upper())
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                walk(field.annotation, prefix + name.upper() + "__")

    walk(Settings, ENV_PREFIX)
    return names


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Reject every ``SKEWLESS_*`` variable that is neither a setting nor one the project
    reads itself, by name, with the closest valid name (a typo would otherwise be ignored)."""
    environ = os.environ if environ is None else environ
    known = settings_variables() | set(PROCESS_VARIABLES)
    unknown = sorted(n for n in environ if n.upper().startswith(ENV_PREFIX) and n.upper() not in known)
    if not unknown:
        return
    described = []
    for name in unknown:
        if name.upper() == f"{ENV_PREFIX}CONFIG_FILE":
            described.append(f"{name} (the settings file is chosen with --config)")
            continue
        close = difflib.get_close_matches(name.upper(), sorted(known), n=1, cutoff=0.6)
        described.append(f"{name}" + (f" (did you mean {close[0]}?)" if close else ""))
    raise ConfigError(f"unknown environment variable{'s' * (len(unknown) > 1)}: " + ", ".join(described),
                      f"settings are {ENV_PREFIX}<KEY> or {ENV_PREFIX}<SECTION>__<KEY> for the keys of {CONFIG_FILE_NAME}")


def _env_variables(loc: tuple[Any, ...], environ: Mapping[str, str]) -> tuple[list[str], bool]:
    """The SKEWLESS_* variables a value at ``loc`` came from, and whether they alone set it:
    the key's own or its section's (JSON) alone; for a whole section, the variables of its
    keys (the file may hold the others)."""
    by_upper = {n.upper(): n for n in environ if n.upper().startswith(ENV_PREFIX)}
    for i in range(len(loc), 0, -1):
        name = ENV_PREFIX + "__".join(str(p).upper() for p in loc[:i])
        if name in by_upper:
            return [by_upper[name]], True
    if loc:
        below = ENV_PREFIX + "__".join(str(p).upper() for p in loc) + "__"
        return sorted(original for upper, original in by_upper.items() if upper.startswith(below)), False
    return [], False


def _format_validation_error(exc: ValidationError, source: str | None, environ: Mapping[str, str] | None = None) -> str:
    """One line naming, for each error, the key and where its value came from: the
    environment variable that set it, else ``source`` (the file)."""
    by_source: dict[str, list[str]] = {}
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        variables, alone = _env_variables(loc, environ) if environ is not None else ([], False)
        named = f"environment variable{'s' * (len(variables) > 1)} {', '.join(variables)}" if variables else ""
        where = named if alone or (variables and source is None) else (
            f"{source} with {named}" if variables else source or "settings")
        # A check's own message, without pydantic's "Value error, " in front.
        msg = str(err["ctx"]["error"]) if err["type"] == "value_error" and "error" in err.get("ctx", {}) else err["msg"]
        text = f"unknown key '{key}'" if err["type"] == "extra_forbidden" else f"'{key}': {msg}" if key else msg
        by_source.setdefault(where, []).append(text)
    return "; ".join(f"{where}: " + "; ".join(texts) for where, texts in by_source.items())


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"settings file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
                          "save the settings file as UTF-8") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    _reject_secrets(loaded, path)
    return loaded


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Load settings from ``config`` (or the nearest skewless.yaml), env, then ``overrides``."""
    check_environment()
    path = Path(config) if config else find_config_file()
    data = _read_file(path) if path is not None else {}
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, str(path) if path else None, os.environ)) from exc
    except SettingsError as exc:
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"{ENV_PREFIX}{field.group(1).upper()}" if field else f"{ENV_PREFIX}*"
        raise ConfigError(f"environment variable {name}: not valid ({exc})",
                          "a whole section is given as JSON, or set one key with SKEWLESS_<SECTION>__<KEY>") from exc
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
