"""The lake's crash-safe commit protocol (the paths are ``skewless.lake_layout``'s).

One *batch* covers a contiguous offset range ``[first, last]`` of one Kafka partition
(``BatchRange``). Its rows go to one file per event date, its bad messages to one
dead-letter file; every file of the batch is named by the batch's range, so a replay of
the same range writes the same names.

Commit protocol for a batch (readers never see a half-written file, a crash at any
point loses nothing and duplicates nothing):

1. write every file under a hidden temp name (``.tmp-...``: Spark and pyarrow ignore
   names starting with ``.`` or ``_``) and fsync it;
2. write the batch's manifest (temp name, fsync, atomic rename): from here on the batch
   *is landed*; the manifest lists each temp name and its final name;
3. rename each temp file to its final name (fsync the directories);
4. the consumer commits offset ``last + 1`` to Kafka.

A file a ``skewless lake compact`` replaced (``LakeLayout.compacted_away``) may be gone
by the time a manifest naming it is rolled forward again: its rows are in the
compaction's output, so that is not an altered lake.

Recovery (on start and on every partition assignment): roll every manifest forward
(rename temp files still present), delete temp files without a manifest, and resume at
``max(committed offset, last landed offset + 1)``: a crash between 2 and 4 never lands
the same offsets twice, a crash before 2 leaves only temp files, which are deleted and
rewritten from the replay.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from skewless.durable import fsync
from skewless.errors import DataError
from skewless.lake_layout import TMP_PREFIX, BatchRange, LakeLayout


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
        elif not final.exists() and not layout.compacted_away(f["final"]):
            raise DataError(f"manifest {manifest} lists {final}, which is missing (the lake was altered)",
                            "restore the file; `skewless ingest verify` shows what the lake is missing")
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
