"""The lake's file layout and its crash-safe commit protocol.

Layout (``lake`` is ``settings.lake_path``)::

    lake/raw/<topic>/date=YYYY-MM-DD/hour=HH/<topic>+<partition>+<first>-<last>.parquet
    lake/dead_letter/<topic>/<topic>+<partition>+<first>-<last>.parquet
    lake/_manifests/<topic>/<partition>/<first>-<last>.json

One *batch* covers a contiguous offset range ``[first, last]`` of one Kafka partition.
Its rows go to one file per event-time hour, its bad messages to one dead-letter file;
every file of the batch is named by the batch's range, so a replay of the same range
writes the same names.

Commit protocol for a batch (readers never see a half-written file, a crash at any
point loses nothing and duplicates nothing):

1. write every file under a hidden temp name (``.tmp-...``: Spark and pyarrow ignore
   names starting with ``.`` or ``_``) and fsync it;
2. write the batch's manifest (temp name, fsync, atomic rename): from here on the batch
   *is landed*; the manifest lists each temp name and its final name;
3. rename each temp file to its final name (fsync the directories);
4. the consumer commits offset ``last + 1`` to Kafka.

Recovery (on start and on every partition assignment): roll every manifest forward
(rename temp files still present), delete temp files without a manifest, and resume at
``max(committed offset, last landed offset + 1)``: a crash between 2 and 4 never lands
the same offsets twice, a crash before 2 leaves only temp files, which are deleted and
rewritten from the replay.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class BatchRange:
    topic: str
    partition: int
    first: int
    last: int

    @property
    def stem(self) -> str:
        return f"{self.topic}+{self.partition}+{self.first:020d}-{self.last:020d}"


class LakeLayout:
    """Paths of the lake on the local filesystem (or a mounted object store)."""

    def __init__(self, lake_path: str | Path):
        if "://" in str(lake_path):
            raise NotImplementedError(
                "the Kafka->lake sink commits with atomic renames and needs a POSIX path; "
                "for object storage, mount the bucket (e.g. s3fs/gcsfuse) or land locally and sync"
            )
        self.root = Path(lake_path)

    def raw_dir(self, topic: str) -> Path:
        return self.root / "raw" / topic

    def hour_dir(self, topic: str, date: str, hour: int) -> Path:
        return self.raw_dir(topic) / f"date={date}" / f"hour={hour:02d}"

    def dead_letter_dir(self, topic: str) -> Path:
        return self.root / "dead_letter" / topic

    def manifest_dir(self, topic: str, partition: int) -> Path:
        return self.root / "_manifests" / topic / str(partition)

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


def fsync(path: Path) -> None:
    """Flush a file's data, or a directory's entries (a rename), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(layout: LakeLayout, batch: BatchRange, moves: list[tuple[Path, Path]], counts: dict) -> Path:
    """Step 2: atomically record that ``batch`` landed, and which temp file becomes which."""
    final = layout.manifest_path(batch)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(TMP_PREFIX + final.name)
    body = {
        "topic": batch.topic, "partition": batch.partition, "first": batch.first, "last": batch.last,
        "files": [{"tmp": str(t.relative_to(layout.root)), "final": str(f.relative_to(layout.root))} for t, f in moves],
        **counts,
    }
    with open(tmp, "w") as fh:
        json.dump(body, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, final)
    fsync(final.parent)
    return final


def roll_forward(layout: LakeLayout, manifest: Path) -> int:
    """Step 3 (also recovery): rename every temp file the manifest lists. Returns renames done."""
    body = json.loads(manifest.read_text())
    done = 0
    dirs = set()
    for f in body["files"]:
        tmp, final = layout.root / f["tmp"], layout.root / f["final"]
        if tmp.exists():
            os.rename(tmp, final)
            dirs.add(final.parent)
            done += 1
        elif not final.exists():
            raise FileNotFoundError(f"manifest {manifest} lists {final}, which is missing (the lake was altered)")
    for d in dirs:
        fsync(d)
    return done


def recover_partition(layout: LakeLayout, topic: str, partition: int) -> dict:
    """Finish landed batches, delete temp files of unlanded ones; returns what was done."""
    manifests = layout.manifests(topic, partition)
    # Only the newest manifests can be unfinished (batches are landed in order).
    rolled = sum(roll_forward(layout, m) for _, _, m in manifests[-3:])
    removed = 0
    for tmp in layout.temp_files(topic, partition):
        tmp.unlink(missing_ok=True)
        removed += 1
    mtmp = layout.manifest_dir(topic, partition)
    if mtmp.is_dir():
        for p in mtmp.glob(f"{TMP_PREFIX}*"):
            p.unlink(missing_ok=True)
            removed += 1
    return {"rolled_forward": rolled, "temp_files_removed": removed,
            "landed_end": manifests[-1][1] if manifests else None}
