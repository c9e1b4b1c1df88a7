"""Fault injection for the reliability tests (a failpoint, as etcd and TiKV have).

``SKEWLESS_INGEST_CRASH_AT=<point>:<n>`` SIGKILLs the consumer the n-th time it
reaches ``<point>``. Unset in normal runs, where ``crash_point`` costs one dict lookup.
Points of the consumer: ``before_manifest``, ``before_rename``, ``after_rename`` (before
the commit); of ``skewless lake compact`` (``ingestion.compact``): ``compact_output_written``,
``compact_before_commit``, ``compact_after_commit``, ``compact_mid_delete``.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get("SKEWLESS_INGEST_CRASH_AT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
