"""What the streaming feature job reports about itself, kept in the online store's Redis
beside the values it writes (so serving can export it without talking to Spark).

One hash ``skewless:stream:<project>:meta``: the last micro-batch applied (its Spark batch
id and query id, which start again with every run of the job), when it started and committed, the clock of its last publication of due rows, how many events it has applied in total, and per view the newest
event time applied (``newest:<view>``, unix seconds) and the stream's lag in Kafka
records (``lag``). Written by ``etl.stream``; read by serving's ``/metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


def prefix(project: str) -> str:
    return f"skewless:stream:{project}"


def meta_key(project: str) -> str:
    return f"{prefix(project)}:meta"


@dataclass(frozen=True)
class StreamStatus:
    batch: int | None  # last micro-batch applied
    query_id: str | None  # the Spark query (checkpoint) the batches belong to
    applied_at: float | None  # unix seconds of the last micro-batch (when it started)
    published_at: float | None  # the stream's clock at its last publication of due rows
    events: int  # events applied since the state was (re)built
    lag: int | None  # Kafka records behind the latest offsets at the last micro-batch
    newest: dict[str, float]  # view -> newest event time applied (unix seconds)
    committed_at: float | None = None  # unix seconds the last micro-batch's transaction was sent


def decode(raw: Mapping[Any, Any]) -> StreamStatus | None:
    """The status from the meta hash's fields (bytes or str); None when the stream never ran."""
    d = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v) for k, v in raw.items()}
    if not d:
        return None

    def num(name: str, kind=float):
        return kind(d[name]) if d.get(name) not in (None, "") else None

    return StreamStatus(
        batch=num("batch", int), query_id=d.get("query_id"), applied_at=num("applied_at"), published_at=num("published_at"),
        events=num("events", int) or 0, lag=num("lag", int),
        newest={k[len("newest:"):]: float(v) for k, v in d.items() if k.startswith("newest:")},
        committed_at=num("committed_at"),
    )


def read(client, project: str) -> StreamStatus | None:
    """The status through a synchronous Redis client."""
    return decode(client.hgetall(meta_key(project)))


async def aread(client, project: str) -> StreamStatus | None:
    """The status through an asyncio Redis client (serving's)."""
    return decode(await client.hgetall(meta_key(project)))
