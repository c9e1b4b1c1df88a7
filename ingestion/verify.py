"""The auditor: read the lake and the dead letters back and account for every offset.

Per topic and partition it reports how many offsets landed as valid rows and as dead
letters, the offset range, duplicates (an offset landed twice) and gaps (an offset in
the range that landed nowhere), and, when the broker answers, the group's committed
offset and the partition's end offset, so "valid + dead-lettered = consumed" is checked
against Kafka itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from ingestion.lake_files import LakeLayout
from skewless.settings import Settings


def _offsets(path, partition_col: str, offset_col: str) -> dict[int, np.ndarray]:
    if not path.is_dir():
        return {}
    dataset = ds.dataset(str(path), format="parquet", partitioning="hive", exclude_invalid_files=False)
    table = dataset.to_table(columns=[partition_col, offset_col])
    if table.num_rows == 0:
        return {}
    parts = table.column(partition_col).to_numpy()
    offs = table.column(offset_col).to_numpy()
    return {int(p): offs[parts == p] for p in np.unique(parts)}


def _gaps(offsets: np.ndarray, start: int | None = None, end: int | None = None) -> list[list[int]]:
    """Missing offsets as [first, last] ranges (the first 20)."""
    u = np.unique(offsets)
    lo = start if start is not None else (int(u[0]) if len(u) else 0)
    hi = end if end is not None else (int(u[-1]) + 1 if len(u) else 0)
    expected_edges = np.concatenate([[lo - 1], u, [hi]])
    d = np.diff(expected_edges)
    idx = np.flatnonzero(d > 1)
    return [[int(expected_edges[i] + 1), int(expected_edges[i + 1] - 1)] for i in idx[:20]]


def _kafka_offsets(settings: Settings, topic: str) -> dict[int, dict[str, int | None]]:
    """Committed (for the ingest group) and end offsets per partition; {} if Kafka is away."""
    try:
        from kafka import KafkaConsumer, TopicPartition

        c = KafkaConsumer(**settings.kafka.client_config(), group_id=settings.kafka.consumer_group,
                          enable_auto_commit=False, request_timeout_ms=10000)
    except Exception:  # noqa: BLE001 - the audit still works from the lake alone
        return {}
    try:
        parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = c.end_offsets(tps) if tps else {}
        begins = c.beginning_offsets(tps) if tps else {}
        return {tp.partition: {"committed": c.committed(tp), "end": ends.get(tp), "begin": begins.get(tp)} for tp in tps}
    except Exception:  # noqa: BLE001
        return {}
    finally:
        c.close()


def verify(settings: Settings, topics: list[str] | None = None, check_kafka: bool = True) -> dict[str, Any]:
    layout = LakeLayout(settings.lake_path)
    topics = topics or list(settings.topics.by_contract().values())
    report: dict[str, Any] = {"topics": {}, "ok": True}
    for topic in topics:
        valid = _offsets(layout.raw_dir(topic), "_kafka_partition", "_kafka_offset")
        dead = _offsets(layout.dead_letter_dir(topic), "partition", "offset")
        kafka = _kafka_offsets(settings, topic) if check_kafka else {}
        parts: dict[str, Any] = {}
        for p in sorted(set(valid) | set(dead) | set(kafka)):
            v = valid.get(p, np.array([], dtype=np.int64))
            d = dead.get(p, np.array([], dtype=np.int64))
            allo = np.concatenate([v, d])
            uniq = np.unique(allo)
            k = kafka.get(p, {})
            # Everything up to the committed offset must have landed (from the first offset still in Kafka).
            start = k.get("begin") if k else None
            end = k.get("committed") if k else None
            if end is None and len(uniq):
                end = int(uniq[-1]) + 1
            gaps = _gaps(allo, start, end) if (len(allo) or end) else []
            entry = {
                "valid": int(len(v)), "dead_lettered": int(len(d)), "landed": int(len(allo)),
                "first": int(uniq[0]) if len(uniq) else None, "last": int(uniq[-1]) if len(uniq) else None,
                "duplicates": int(len(allo) - len(uniq)), "gaps": gaps,
                "committed": k.get("committed"), "end_offset": k.get("end"),
                # Messages in Kafka not landed yet (not an error: the consumer may be behind).
                "lag": (k["end"] - (k.get("committed") or k.get("begin") or 0)) if k.get("end") is not None else None,
            }
            entry["ok"] = entry["duplicates"] == 0 and not gaps
            report["ok"] &= entry["ok"]
            parts[str(p)] = entry
        totals = {key: sum(e[key] for e in parts.values()) for key in ("valid", "dead_lettered", "landed", "duplicates")}
        totals["lag"] = sum(e["lag"] or 0 for e in parts.values())
        totals["gaps"] = sum(len(e["gaps"]) for e in parts.values())
        report["topics"][topic] = {"partitions": parts, **totals}
    return report
