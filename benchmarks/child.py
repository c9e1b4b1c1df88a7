"""Run a measurement in a fresh child process, so one contender's memory, caches and
threads never count for another; and read peak resident memory (VmHWM)."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from typing import Any, Callable


def peak_rss_mb(pid: int | str = "self") -> float | None:
    """A process's peak resident memory in MB (VmHWM: reset at exec), None if unknown."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def children_peak_rss_mb() -> float | None:
    """The summed peak memory of this process's live descendants (e.g. Spark's JVM)."""
    import psutil

    peaks = [peak_rss_mb(c.pid) for c in psutil.Process(os.getpid()).children(recursive=True)]
    peaks = [p for p in peaks if p is not None]
    return sum(peaks) if peaks else None


def in_child(target: Callable[..., None], *args: Any, timeout_s: float = 3600) -> dict:
    """``target(*args, queue)`` in a spawned process; returns what it put on the queue.
    A child that dies or overruns raises instead of leaving the caller waiting."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                return q.get(timeout=1.0)
            except queue.Empty:
                if not p.is_alive() and q.empty():
                    raise RuntimeError(f"benchmark child {target.__name__} died (exit code {p.exitcode})") from None
                if time.monotonic() > deadline:
                    p.kill()
                    raise TimeoutError(f"benchmark child {target.__name__} took over {timeout_s:.0f} s") from None
    finally:
        p.join(timeout=60)
