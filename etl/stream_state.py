"""The streaming job's state, in the online store's Redis (durable with its AOF), under
``skewless:stream:<project>:`` (``skewless.features.stream_status.prefix``):

* ``s:<view>:<entity>`` — one JSON blob per view and entity: its per-hop partials
  (``etl.windows``) for the buckets that can still change a value (the longest window
  back from now), and its *pending rows*: the rows the view will have at coming change
  points (the values as buckets leave windows), plus the current one until published.
  It expires once its last row is published and every bucket has left every window:
  memory is bounded by the active entities and the longest window.
* ``due:<view>`` — sorted set, entity -> the boundary (unix s) of its next pending row.
* ``seen:<contract>`` — sorted set, event id -> Kafka time it arrived: ids seen within
  ``stream.dedupe_horizon_s`` are retries and dropped (the first copy counts).
* ``parked:<view>`` — hash, event id -> an event whose enrichment has not arrived yet
  (a label read before its transaction), tried again with every micro-batch.
* ``enrich:<contract>:<day>`` — hashes, event id -> the columns another source joins by
  it (a label gets its transaction's merchant), kept ``stream.enrich_horizon_s``.
* ``meta`` — the last micro-batch applied and the status figures (``stream_status``).

A micro-batch's changes are one ``MULTI``/``EXEC`` together with its batch id, so a
batch Spark replays after a crash is recognised and skipped: each event is applied
exactly once (see ``etl.stream``).
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import numpy as np
import pandas as pd

from etl import windows
from skewless.features import stream_status
from skewless.features.dsl import WindowedView


def entity_id(values: Iterable[Any]) -> str:
    return json.dumps([str(v) for v in values], separators=(",", ":"))


class StreamState:
    def __init__(self, client, project: str):
        self.r = client
        self.project = project
        self.prefix = stream_status.prefix(project)
        self.meta = stream_status.meta_key(project)

    # -- keys
    def blob_key(self, view: str, eid: str) -> str:
        return f"{self.prefix}:s:{view}:{eid}"

    def due_key(self, view: str) -> str:
        return f"{self.prefix}:due:{view}"

    def seen_key(self, contract: str) -> str:
        return f"{self.prefix}:seen:{contract}"

    def parked_key(self, view: str) -> str:
        return f"{self.prefix}:parked:{view}"

    def parked(self, view: str) -> list[dict]:
        """Events of the view waiting for their enrichment (``_ts`` in unix µs)."""
        return [json.loads(v) for v in self.r.hvals(self.parked_key(view))]

    def enrich_key(self, contract: str, day: int) -> str:
        return f"{self.prefix}:enrich:{contract}:{day}"

    # -- meta
    def status(self) -> stream_status.StreamStatus | None:
        return stream_status.read(self.r, self.project)

    def reset(self) -> int:
        """Forget everything the stream keeps (a new checkpoint replays from the start)."""
        n = 0
        for key in self.r.scan_iter(match=f"{self.prefix}:*", count=1000):
            n += self.r.delete(key)
        return n

    # -- blobs
    def load(self, view: WindowedView, eids: list[str]) -> tuple[pd.DataFrame, dict[str, list]]:
        """The stored partials of these entities (one frame) and their pending rows."""
        raw = self.r.mget([self.blob_key(view.name, e) for e in eids]) if eids else []
        frames, rows = [], {}
        for eid, blob in zip(eids, raw):
            if blob is None:
                continue
            d = json.loads(blob)
            rows[eid] = d["rows"]
            frames.append(decode_partials(view, json.loads(eid), d["p"]))
        if not frames:
            return pd.DataFrame(), rows
        return pd.concat(frames, ignore_index=True), rows

    def seen(self, contract: str, ids: list[str]) -> list[bool]:
        if not ids:
            return []
        scores = self.r.zmscore(self.seen_key(contract), ids)
        return [s is not None for s in scores]

    def lookup(self, contract: str, ids: list[str], days: Iterable[int]) -> dict[str, dict]:
        found: dict[str, dict] = {}
        if not ids:
            return found
        with self.r.pipeline(transaction=False) as pipe:
            days = sorted(set(days), reverse=True)
            for day in days:
                pipe.hmget(self.enrich_key(contract, day), ids)
            for values in pipe.execute():
                for i, v in zip(ids, values):
                    if v is not None and i not in found:
                        found[i] = json.loads(v)
        return found


def encode_partials(view: WindowedView, p: pd.DataFrame) -> dict[str, list]:
    """One entity's partials (rows of ``p``) as JSON-able columns (sums as decimal strings)."""
    out: dict[str, list] = {"_k": [int(x) for x in p["_k"]]}
    for name in windows.partial_names(view):
        col = p[name].tolist()
        if name.startswith("_sum_"):
            col = [str(int(x)) for x in col]
        elif name.startswith(("_n", "_last_ts")):
            col = [int(x) for x in col]
        elif name.startswith(("_min_", "_max_")):
            col = [None if x is None or np.isnan(x) else float(x) for x in col]
        elif name.startswith("_set_"):
            col = [list(x) for x in col]
        elif name.startswith("_last_"):
            col = [None if windows._isnull(x) else (x.item() if hasattr(x, "item") else x) for x in col]
        out[name] = col
    return out


def decode_partials(view: WindowedView, key_values: list[str], cols: dict[str, list]) -> pd.DataFrame:
    n = len(cols["_k"])
    data: dict[str, Any] = {k: [v] * n for k, v in zip(view.join_keys, key_values)}
    data["_k"] = np.array(cols["_k"], dtype="int64")
    for name in windows.partial_names(view):
        col = cols[name]
        if name.startswith("_sum_"):
            data[name] = np.array([int(x) for x in col], dtype=object)
        elif name in ("_n", "_last_ts"):
            data[name] = np.array(col, dtype="int64")
        elif name.startswith(("_min_", "_max_")):
            data[name] = np.array([np.nan if x is None else x for x in col], dtype="float64")
        elif name.startswith("_set_"):
            data[name] = [tuple(x) for x in col]
        else:
            data[name] = np.array(col, dtype=object)
    return pd.DataFrame(data)
