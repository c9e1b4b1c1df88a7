"""Where everything of the lake lives: every path is built here, and only here.

Layout (``lake`` is ``settings.lake_path``, ``state`` is ``settings.state_dir``)::

    lake/raw/<topic>/date=YYYY-MM-DD/<topic>+<partition>+<first>-<last>.parquet   one file per event date of a batch
    lake/raw/<topic>/date=YYYY-MM-DD/compacted-<id>-<n>.parquet              a compaction's outputs
    lake/dead_letter/<topic>/<topic>+<partition>+<first>-<last>.parquet
    lake/_manifests/<topic>/<partition>/<first>-<last>.json
    lake/_compactions/<topic>/date=YYYY-MM-DD/<id>.json     a committed compaction: its inputs and outputs
    lake/features/<view>/date=YYYY-MM-DD/part-*.parquet
    state/etl_state.json               the ETL's incremental watermark
    state/etl_retried/<contract>.parquet  ids with several landed copies (retries), as of the watermark
    state/etl_written/<view>.json      the start of the last ETL run that wrote into a view's table
    state/features_recomputed.json     offline rows rewritten since the last materialization
    state/monitoring/drift/<end>.json  each drift check: verdicts and live histograms (no rows)
    state/monitoring/drift_latest.json the latest check's figures, which serving exports
    state/monitoring/quality/etl-<time>.json  feature-table checks of each ETL run
    state/monitoring/served/<time>.json       each served-consistency check (counts, no rows)

Raw files are partitioned by event date (UTC) only: a batch writes one file per event
date it holds, its rows sorted by event time, so the Parquet row groups' statistics
prune by time within a date (an event-hour directory per batch cut out-of-order traffic
into one-row files). They are named by the Kafka offset range of the batch that wrote
them (``BatchRange``), so a replay of the same range writes the same names; names
starting with ``.`` or ``_`` (temp files, manifests) are never rows to any reader.

Which raw files hold a topic's rows is ``LakeLayout.raw_files``, and nothing else: a
compaction (``ingestion.compact``) replaces a date's small files by large ones, and its
manifest, written atomically, is the moment it happens. Readers are handed the explicit
file list (never a directory or a glob): the inputs of committed compactions are left
out (they are deleted only a grace period later, so a reader that listed them before the
commit still reads them), and so are the outputs of compactions that never committed.

URI policy: the lake is a local directory, given as a path or a ``file://`` URI (Spark
and Feast are handed the same form). Object storage (``s3://``, ``gs://``, ...) is not
supported yet: the sink commits with atomic renames and the ETL plans by listing files,
both of which need a POSIX filesystem. ``LakeLayout`` refuses such a lake with one
``ConfigError``, so every command that touches the lake says the same thing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, NamedTuple
from urllib.parse import urlsplit

from skewless.errors import ConfigError
from skewless.settings_checks import mask_url_password

if TYPE_CHECKING:
    from skewless.settings import Settings

TMP_PREFIX = ".tmp-"
COMPACTED_PREFIX = "compacted-"
ETL_STATE_FILE = "etl_state.json"
RECOMPUTED_FILE = "features_recomputed.json"


def landed_at(path: Path) -> float:
    """When a lake file appeared under its final name (unix time): the sink writes a temp
    file and renames it, and a rename updates ctime (not mtime) — so a file written before
    a run started but renamed into place during it counts as landed after the start (the
    ETL's incremental planning and the served-consistency coverage both ask this)."""
    st = path.stat()
    return max(st.st_mtime, st.st_ctime)


class RawFile(NamedTuple):
    """One file of a topic's rows, as ``LakeLayout.raw_files`` lists it."""

    path: Path
    date: date
    # When its rows landed: the file's own time, or for a compaction's output the latest
    # landing of its inputs (rewriting rows does not make them new to the ETL's planner).
    landed_at: float
    compacted: bool


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

    def date_dir(self, topic: str, day: str | date) -> Path:
        return self.raw_dir(topic) / f"date={day}"

    def compactions_dir(self, topic: str, day: str | date) -> Path:
        return self.root / "_compactions" / topic / f"date={day}"

    def compactions(self, topic: str, day: str | date) -> list[dict]:
        """The committed compactions of a date partition, oldest first (their manifests)."""
        d = self.compactions_dir(topic, day)
        out = []
        if d.is_dir():
            for p in sorted(d.iterdir()):
                if p.suffix == ".json" and not p.name.startswith((".", "_")):
                    out.append(json.loads(p.read_text()))
        return out

    def compacted_away(self, rel: str) -> bool:
        """True if the raw file ``rel`` (relative to the root) is an input of a committed
        compaction (its rows are in the compaction's output; the file may be deleted)."""
        parts = Path(rel).parts
        if len(parts) != 4 or parts[0] != "raw" or not parts[2].startswith("date="):
            return False
        return any(rel in c["inputs"] for c in self.compactions(parts[1], parts[2][5:]))

    def raw_dates(self, topic: str) -> list[date]:
        root = self.raw_dir(topic)
        if not root.is_dir():
            return []
        return sorted(date.fromisoformat(d.name[5:]) for d in root.iterdir() if d.name.startswith("date="))

    def raw_files(self, topic: str, start: date | None = None, end: date | None = None) -> list[RawFile]:
        """THE list of files holding the topic's rows (event dates in ``[start, end)``): what
        every reader reads. Each row is in exactly one listed file, also while a compaction
        commits: a date's compaction manifests are read before its directory, so a file is
        left out only for a compaction whose output is listed instead; an input of one
        committed after that read is still listed (and kept on disk for a grace period)."""
        out = []
        for day in self.raw_dates(topic):
            if (start is not None and day < start) or (end is not None and day >= end):
                continue
            committed = self.compactions(topic, day)  # first: see the docstring
            replaced = {i for c in committed for i in c["inputs"]}
            outputs = [(o["path"], o["landed_at"]) for c in committed for o in c["outputs"]]
            d = self.date_dir(topic, day)
            for entry in os.scandir(d):
                name = entry.name
                if name.startswith((".", "_")) or not name.endswith(".parquet") or name.startswith(COMPACTED_PREFIX):
                    continue
                path = Path(entry.path)
                if str(path.relative_to(self.root)) in replaced:
                    continue
                out.append(RawFile(path, day, landed_at(path), False))
            out.extend(RawFile(self.root / rel, day, t, True) for rel, t in outputs if rel not in replaced)
        return out

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

    def retried_ids_path(self, contract: str) -> Path:
        """The ids of ``contract`` with more than one landed copy, in every raw file the ETL
        has read so far (``etl.incremental.load_retried``)."""
        return self.state_dir / "etl_retried" / f"{contract}.parquet"

    def etl_written_path(self, view: str) -> Path:
        """When the last ETL run that wrote into ``view``'s table started (``etl.incremental``)."""
        return self.state_dir / "etl_written" / f"{view}.json"

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

    @property
    def drift_latest_path(self) -> Path:
        """The figures of the drift check of the newest traffic (``skewless.drift_status``)."""
        return self.state_dir / "monitoring" / "drift_latest.json"

    @property
    def served_dir(self) -> Path:
        """Served-consistency checks (``skewless check consistency --served``), one JSON file each."""
        return self.state_dir / "monitoring" / "served"
