"""Land simulated events straight into a lake (the layout the sink writes), for tests of
the stages after ingestion that do not need Kafka in the loop."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ingestion.simulator import simulate
from skewless.contracts import CONTRACTS
from skewless.lake_layout import LakeLayout


def land(settings, contract: str, events: list[dict], tag: str = "t") -> None:
    c = CONTRACTS[contract]
    topic = getattr(settings.topics, contract)
    by_date: dict[str, list] = {}
    now = datetime.now(timezone.utc)
    for i, e in enumerate(events):
        r = c.validate(e)
        r.update(_kafka_partition=0, _kafka_offset=i, _ingested_at=now)
        ts = r[c.time_field]
        by_date.setdefault(ts.strftime("%Y-%m-%d"), []).append(r)
    for d, rows in by_date.items():
        path = LakeLayout.of(settings).date_dir(topic, d)
        path.mkdir(parents=True, exist_ok=True)
        present = set().union(*(r.keys() for r in rows))
        pq.write_table(pa.Table.from_pylist(rows, schema=c.arrow_schema(present)), path / f"{tag}.parquet")


def land_batch(settings, contract: str, partition: int, first_offset: int, messages: list[bytes],
               commit: bool = True) -> None:
    """Land raw messages as one batch of ``partition`` at ``first_offset`` with the sink's own
    code (files, manifest, renames; every row stamped with this moment's ``_ingested_at``).
    ``commit=False`` stops before the manifest, as a crash would: temp files only."""
    from ingestion.batch import PartitionBatch
    from ingestion.lake_files import roll_forward, write_manifest

    layout = LakeLayout.of(settings)
    batch = PartitionBatch(getattr(settings.topics, contract), partition, CONTRACTS[contract], settings.ingest)
    for i, value in enumerate(messages):
        batch.add(first_offset + i, None, value, None)
    br, moves, counts = batch.write_temp_files(layout)
    if commit:
        roll_forward(layout, write_manifest(layout, br, moves, counts))


def land_simulation(settings, events: int, seed: int, start: datetime, days: int):
    sim = simulate(events, seed, start, days)
    land(settings, "transactions", sim.transactions)
    land(settings, "labels", sim.labels)
    return sim
