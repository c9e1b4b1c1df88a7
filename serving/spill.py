"""A bounded, durable local spill for prediction records Kafka has not acknowledged.

One spill is one directory ``<root>/<pid>-<random>/`` owned by one live process through
an exclusive ``flock`` on its ``lock`` file. Records are appended to numbered segment
files (``000000000001.seg``, ...), one line per record::

    {"t":<timestamp ms>,"u":<0|1>,"k":"<key>"}<TAB><value JSON>\\n

``t`` is the Kafka timestamp the record is (re)sent with; ``u`` = 1 marks a record that
was handed to Kafka once and may have been written (its delivery timed out): it must be
looked for in the topic before it is sent again. The value is the exact bytes sent to
Kafka (compact JSON has no raw tab or newline, so the line splits unambiguously).

Durability: every batch of appends is written with one ``write`` as it arrives (a kill
-9 of the process loses nothing written); ``fsync`` runs at most every
``fsync_interval_s`` (1 s), when a segment is sealed and on close, so a power loss can
lose at most the last second. A torn or unreadable line is skipped and counted.

Bounded: ``max_bytes`` over all segments; ``append`` accepts the prefix of a batch that
fits and the caller counts the rest as dropped.

A segment is replayed whole, then deleted. Before its first record is sent again a
``<seq>.replaying`` marker is written: a spill whose owner died mid-replay is then known
to hold records that may already be in the topic. A spill left by a process that is gone
(its lock is free) is adopted by the next process that looks (``adopt_orphans``).
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import orjson

from skewless.durable import fsync

SEGMENT_SUFFIX = ".seg"
MARKER_SUFFIX = ".replaying"
LOCK_NAME = "lock"


class SpilledRecord(NamedTuple):
    ts: int  # Kafka timestamp, epoch ms
    uncertain: bool  # handed to Kafka before: may already be in the topic
    key: str
    value: bytes


def encode(ts: int, uncertain: bool, key: str, value: bytes) -> bytes:
    return orjson.dumps({"t": ts, "u": int(uncertain), "k": key}) + b"\t" + value + b"\n"


def decode(line: bytes) -> SpilledRecord:
    head, value = line.split(b"\t", 1)
    meta = orjson.loads(head)
    if not value:
        raise ValueError("empty value")
    return SpilledRecord(int(meta["t"]), bool(meta["u"]), str(meta["k"]), value)


@dataclass
class Segment:
    seq: int
    path: Path
    records: int = 0
    bytes: int = 0

    @property
    def marker(self) -> Path:
        return self.path.with_suffix(MARKER_SUFFIX)


def _try_lock(directory: Path) -> int | None:
    """An fd holding the directory's exclusive lock, or None if a live process holds it."""
    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class Spill:
    """One spill directory, locked by this process. Not thread-safe: one thread uses it."""

    def __init__(self, directory: Path, lock_fd: int, max_bytes: int, writable: bool,
                 segment_bytes: int = 4 * 1024 * 1024, fsync_interval_s: float = 1.0):
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync_interval_s = fsync_interval_s
        self.writable = writable
        self.unreadable = 0  # torn or corrupt lines found while reading (not replayable)
        self._lock_fd: int | None = lock_fd
        self._fd: int | None = None  # the active (last) segment, open for appends
        self._dirty = False
        self._synced_at = time.monotonic()
        self.segments: list[Segment] = []
        for path in sorted(directory.glob("*" + SEGMENT_SUFFIX)):
            data = path.read_bytes()
            self.segments.append(Segment(int(path.stem), path, data.count(b"\n"), len(data)))
        if writable:
            self._open_new_segment()

    # -- creating, adopting, closing -----------------------------------------------
    @classmethod
    def create(cls, root: Path, max_bytes: int, **kw) -> "Spill":
        """A new spill of this process under ``root`` (made under a hidden name, locked,
        then renamed, so no other process can adopt it half-made)."""
        root.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp = root / f".{name}"
        tmp.mkdir()
        fd = _try_lock(tmp)
        assert fd is not None  # nobody else knows the hidden name
        final = root / name
        tmp.rename(final)
        fsync(root)
        return cls(final, fd, max_bytes, writable=True, **kw)

    @classmethod
    def adopt_orphans(cls, root: Path, **kw) -> list["Spill"]:
        """Spills under ``root`` whose process is gone, locked for replay by this one
        (read-only: nothing is appended to them). Empty ones are removed."""
        adopted = []
        if not root.is_dir():
            return adopted
        for directory in sorted(root.iterdir()):
            if directory.name.startswith(".") or not directory.is_dir():
                continue
            fd = _try_lock(directory)
            if fd is None:
                continue
            try:
                spill = cls(directory, fd, max_bytes=0, writable=False, **kw)
            except OSError:  # removed by its adopter between our listing and our lock
                os.close(fd)
                continue
            if spill.records:
                adopted.append(spill)
            else:
                spill.close()
        return adopted

    def close(self) -> None:
        """Write out and sync; an empty spill removes its directory. Releases the lock."""
        if self._lock_fd is None:
            return
        self._close_active()
        if not self.records:
            for path in [*self.directory.glob("*" + SEGMENT_SUFFIX), *self.directory.glob("*" + MARKER_SUFFIX)]:
                path.unlink(missing_ok=True)  # (a marker outlives its segment if a crash fell between)
            self.segments.clear()
            (self.directory / LOCK_NAME).unlink(missing_ok=True)
            try:
                self.directory.rmdir()
            except OSError:
                pass
        os.close(self._lock_fd)
        self._lock_fd = None

    # -- size ------------------------------------------------------------------------
    @property
    def records(self) -> int:
        return sum(s.records for s in self.segments)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.segments)

    # -- appending -------------------------------------------------------------------
    def append(self, lines: list[bytes]) -> int:
        """Append encoded lines in order; returns how many fit (a prefix of ``lines``)."""
        if not self.writable:
            return 0
        room = self.max_bytes - self.bytes
        accepted = 0
        pending: list[bytes] = []
        for line in lines:
            if len(line) > room:
                break
            room -= len(line)
            active = self.segments[-1]
            if active.records and active.bytes + len(line) > self.segment_bytes:
                self._write(pending)
                pending = []
                self.seal()
                active = self.segments[-1]
            pending.append(line)
            active.records += 1
            active.bytes += len(line)
            accepted += 1
        self._write(pending)
        return accepted

    def _write(self, lines: list[bytes]) -> None:
        if not lines:
            return
        data = memoryview(b"".join(lines))
        while data:
            data = data[os.write(self._fd, data):]
        self._dirty = True

    def sync(self, force: bool = False) -> None:
        """fsync the active segment if it has unsynced data and the interval has passed."""
        if self._fd is None or not self._dirty:
            return
        now = time.monotonic()
        if force or now - self._synced_at >= self.fsync_interval_s:
            os.fsync(self._fd)
            self._dirty = False
            self._synced_at = now

    def seal(self) -> None:
        """Close the active segment (synced) and start a new one."""
        self._close_active()
        self._open_new_segment()

    def _open_new_segment(self) -> None:
        seq = self.segments[-1].seq + 1 if self.segments else 1
        path = self.directory / f"{seq:012d}{SEGMENT_SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fsync(self.directory)
        self.segments.append(Segment(seq, path))
        self._dirty = False

    def _close_active(self) -> None:
        if self._fd is None:
            return
        self.sync(force=True)
        os.close(self._fd)
        self._fd = None
        active = self.segments[-1]
        if not active.records:
            active.path.unlink(missing_ok=True)
            self.segments.pop()

    # -- replaying -------------------------------------------------------------------
    def next_to_replay(self) -> Segment | None:
        """The oldest segment that is not being written to (sealing the active one when
        it is the only one holding records)."""
        active = self.segments[-1] if self._fd is not None else None
        for seg in self.segments:
            if seg is not active:
                return seg
        if active is not None and active.records:
            self.seal()
            return self.segments[0]
        return None

    def read(self, seg: Segment) -> list[SpilledRecord]:
        """The segment's records in order; torn or corrupt lines are skipped and counted
        in ``unreadable``."""
        data = seg.path.read_bytes()
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        elif lines:  # no newline at the end: the last write was torn (power loss)
            lines.pop()
            self.unreadable += 1
        records = []
        for line in lines:
            try:
                records.append(decode(line))
            except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
                self.unreadable += 1
        return records

    def is_marked(self, seg: Segment) -> bool:
        return seg.marker.exists()

    def mark(self, seg: Segment) -> None:
        """Note (durably) that records of ``seg`` are about to be sent again."""
        if not seg.marker.exists():
            seg.marker.touch()
            fsync(self.directory)

    def remove(self, seg: Segment) -> None:
        """Forget a segment whose every record is confirmed in the topic."""
        seg.path.unlink(missing_ok=True)
        seg.marker.unlink(missing_ok=True)
        self.segments.remove(seg)
