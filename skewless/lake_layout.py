"""Where everything of the lake lives: every path is built here, and only here.

Layout (``lake`` is ``settings.lake_path``, ``state`` is ``settings.state_dir``)::

    lake/raw/<topic>/date=YYYY-MM-DD/hour=HH/<topic>+<partition>+<first>-<last>.parquet
    lake/dead_letter/<topic>/<topic>+<partition>+<first>-<last>.parquet
    lake/_manifests/<topic>/<partition>/<first>-<last>.json
    lake/features/<view>/date=YYYY-MM-DD/part-*.parquet
    state/etl_state.json               the ETL's incremental watermark
    state/features_recomputed.json     offline rows rewritten since the last materialization
    state/monitoring/drift/<end>.json  each drift check: verdicts and live histograms (no rows)

Raw files are named by the Kafka offset range of the batch that wrote them
(``BatchRange``), so a replay of the same range writes the same names; names starting
with ``.`` or ``_`` (temp files, manifests) are never rows to any reader.

URI policy: the lake is a local directory, given as a path or a ``file://`` URI (Spark
and Feast are handed the same form). Object storage (``s3://``, ``gs://``, ...) is not
supported yet: the sink commits with atomic renames and the ETL plans by listing files,
both of which need a POSIX filesystem. ``LakeLayout`` refuses such a lake with one
``ConfigError``, so every command that touches the lake says the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable
from urllib.parse import urlsplit

from skewless.errors import ConfigError
from skewless.settings_checks import mask_url_password

if TYPE_CHECKING:
    from skewless.settings import Settings

TMP_PREFIX = ".tmp-"
ETL_STATE_FILE = "etl_state.json"
RECOMPUTED_FILE = "features_recomputed.json"


@dataclass(frozen=True)
class BatchRange:
    """A contiguous offset range ``[first, last]`` of one Kafka partition: one landed batch."""

    topic: str
    partition: int
    first: int
    last: int

    @property
    def stem(self) -> str:
        return f"{self.topic}+{self.partition}+{self.first:020d}-{self.last:020d}"


def local_lake_root(lake_path: str | Path) -> Path:
    """The lake's local directory, from a path or a ``file://`` URI; any other URI is
    refused with the one error for a lake that is not local."""
    text = str(lake_path)
    if "://" not in text:
        return Path(text)
    parts = urlsplit(text)
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return Path(parts.path)
    raise ConfigError(
        f"lake_path must be local (a path or a file:// URI) for now: {mask_url_password(text)} is not",
        "object storage is not supported yet (the sink commits with atomic renames, the ETL lists files); "
        "mount the bucket (e.g. s3fs, gcsfuse) and give its local path, or land locally and sync",
    )


class LakeLayout:
    """Every path of the lake (and of the state files that track it)."""

    def __init__(self, lake_path: str | Path, state_dir: str | Path | None = None):
        self.root = local_lake_root(lake_path)
        # What Spark and Feast are given: the form the settings used (path or file:// URI).
        self.uri = f"file://{self.root}" if str(lake_path).startswith("file://") else str(self.root)
        self._state_dir = Path(state_dir) if state_dir is not None else None

    @classmethod
    def of(cls, settings: Settings) -> LakeLayout:
        return cls(settings.lake_path, settings.state_dir)

    # --- raw events, dead letters, manifests (written by the ingestion sink)

    @property
    def raw_root(self) -> Path:
        return self.root / "raw"

    def raw_dir(self, topic: str) -> Path:
        return self.raw_root / topic

    def hour_dir(self, topic: str, date: str, hour: int) -> Path:
        return self.raw_dir(topic) / f"date={date}" / f"hour={hour:02d}"

    def raw_glob(self, topic: str) -> str:
        """Every row file of a topic as one glob (temp files and manifests excluded)."""
        return str(self.raw_dir(topic) / "date=*" / "hour=*" / "[!._]*.parquet")

    def dead_letter_dir(self, topic: str) -> Path:
        return self.root / "dead_letter" / topic

    @property
    def manifests_root(self) -> Path:
        return self.root / "_manifests"

    def manifest_dir(self, topic: str, partition: int) -> Path:
        return self.manifests_root / topic / str(partition)

    def manifest_path(self, batch: BatchRange) -> Path:
        return self.manifest_dir(batch.topic, batch.partition) / f"{batch.first:020d}-{batch.last:020d}.json"

    # --- reading back what landed

    def manifests(self, topic: str, partition: int) -> list[tuple[int, int, Path]]:
        d = self.manifest_dir(topic, partition)
        out = []
        if d.is_dir():
            for p in d.iterdir():
                if p.suffix == ".json" and not p.name.startswith("."):
                    first, last = p.stem.split("-")
                    out.append((int(first), int(last), p))
        return sorted(out)

    def landed_end(self, topic: str, partition: int) -> int | None:
        """The last offset of ``partition`` that landed, or None."""
        ms = self.manifests(topic, partition)
        return ms[-1][1] if ms else None

    def temp_files(self, topic: str, partition: int) -> Iterable[Path]:
        prefix = f"{TMP_PREFIX}{topic}+{partition}+"
        for base in (self.raw_dir(topic), self.dead_letter_dir(topic)):
            if base.is_dir():
                yield from (p for p in base.rglob(f"{prefix}*") if p.is_file())

    # --- offline feature tables (written by the ETL, read by Feast)

    def features_dir(self, view: str) -> Path:
        return self.root / "features" / view

    def features_uri(self, view: str) -> str:
        """The view's table as Spark writes it and Feast's file source names it."""
        return f"{self.uri}/features/{view}"

    # --- state files

    @property
    def state_dir(self) -> Path:
        if self._state_dir is None:
            raise ConfigError("this lake layout was made without a state dir", "use LakeLayout.of(settings)")
        return self._state_dir

    @property
    def etl_state_path(self) -> Path:
        return self.state_dir / ETL_STATE_FILE

    @property
    def stream_checkpoint(self) -> Path:
        """The streaming feature job's Spark checkpoint (its Kafka offsets per micro-batch)."""
        return self.state_dir / "stream" / "checkpoint"

    @property
    def recomputed_path(self) -> Path:
        return self.state_dir / RECOMPUTED_FILE

    @property
    def quality_dir(self) -> Path:
        """Data-quality reports of the feature tables (``skewless etl run``), one JSON file each."""
        return self.state_dir / "monitoring" / "quality"

    @property
    def drift_dir(self) -> Path:
        """Drift checks (``skewless monitor drift``), one JSON file each."""
        return self.state_dir / "monitoring" / "drift"
