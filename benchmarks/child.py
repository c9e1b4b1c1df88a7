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


def _child_main(target: Callable[..., None], *args: Any) -> None:
    """The child's entry: the CLI's warning filters first (third-party deprecation and
    experimental-feature chatter hidden, ours shown), so a child's log shows what the CLI shows."""
    from skewless.quiet_warnings import hide_third_party_warnings

    hide_third_party_warnings()

    target(*args)


def in_child(target: Callable[..., None], *args: Any, timeout_s: float = 3600,
             on_message: Callable[[Any], bool] | None = None, name: str | None = None) -> Any:
    """``target(*args, queue)`` in a spawned process; returns what it put on the queue.
    A child that dies or overruns raises instead of leaving the caller waiting.

    ``on_message``, if given, sees each message first: it returns True for one it consumed
    (e.g. progress, relayed) and the wait goes on; the first message it does not consume is
    returned. ``name`` names the child in errors (default: the target's name)."""
    name = name or f"benchmark child {target.__name__}"
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child_main, args=(target, *args, q))
    p.start()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                msg = q.get(timeout=1.0)
            except queue.Empty:
                if not p.is_alive() and q.empty():
                    raise RuntimeError(f"{name} died (exit code {p.exitcode})") from None
                msg = None
            if msg is not None and not (on_message is not None and on_message(msg)):
                return msg
            if time.monotonic() > deadline:
                p.kill()
                raise TimeoutError(f"{name} took over {timeout_s:.0f} s")
    finally:
        p.join(timeout=60)
        if p.is_alive():
            p.kill()
            p.join(timeout=10)
