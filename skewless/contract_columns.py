"""A contract's checks over Arrow columns: many messages read and checked in a few calls.

The sink's fast path (``ingestion.batch``). ``BlockReader.read`` parses a block of Kafka
message values in one call to pyarrow's JSON reader (C++, the GIL released) with the
contract's fields as an explicit schema, runs the contract's field and message checks as
Arrow compute over the columns, and returns the rows it *accepts*, already in the lake's
Arrow types. It never rejects: a message it does not accept goes through
``Contract.parse_message``, the one definition of every rule, which gives the row or the
reason. So a dead letter's reason is always the per-event path's, and the checks here
only have to accept a subset of what ``parse_message`` accepts, with the same values
(``tests/unit/test_contract_columns.py`` compares both on hostile blocks):

- the value starts with ``{``, holds no newline and is at most ``max_event_bytes``;
- Arrow's reader takes the block: it fails the whole block on invalid JSON, a value that is
  not an object, a field the contract does not name or one given twice, a value of the
  wrong JSON type, an integer written as ``1.0`` or past 64 bits, a number past a double.
  A failed block is split in halves and read again, down to ``MIN_SPLIT`` messages, which
  go per event; a block giving more rows than messages (``{..}{..}`` in one value) too;
- text: ASCII, printable, 1 to 256 characters, no space at either end (text with other
  characters goes per event: the per-event rule is Unicode's ``str.isprintable``);
- codes: exactly n ASCII upper-case letters;
- times: ``YYYY-MM-DDTHH:MM:SS[.f]`` with ``Z`` or ``+00:00``, 1 to 6 digits of fraction,
  a year 20xx (so within [2000, 2100)); other offsets and forms go per event;
- amounts and probabilities: in range (NaN is not); integers: in int32; booleans;
- ``schema_version``: present and in [1, the contract's version] (a null one is an error
  per event while an absent one is not: the columns cannot tell them apart);
- the message key: none, empty, or the bytes of the event's ``key_field``.

A contract with a field kind the columns cannot check (``NUMBERS``: a JSON object of any
names) has no reader: its messages go per event.
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from skewless.contracts import (AMOUNT, BOOL, CODE2, CODE3, INT, INT32_MAX, INT32_MIN, MAX_AMOUNT, MAX_EVENT_TIME,
                                MAX_TEXT_LENGTH, MIN_AMOUNT, MIN_EVENT_TIME, PROB, STR, TIME, Contract)

# A failed block is split in halves down to this many messages (or 1/64 of the block read,
# if more), whose messages then go per event: one bad message costs about two more reads
# of the block, a run of them at most ~6.
MIN_SPLIT = 16
SPLIT_DEPTH = 6
# What each kind accepts, as a regular expression (RE2) over the text; ``\x1f`` separates the
# fields joined into one string (no accepted value holds it). A time: UTC in the one form
# Arrow's cast and ``datetime.fromisoformat`` read alike; the years 20xx are exactly
# [MIN_EVENT_TIME, MAX_EVENT_TIME) in UTC; the day of the month is checked by the cast (an
# impossible date fails the block, which is then split).
assert (MIN_EVENT_TIME.year, MAX_EVENT_TIME.year) == (2000, 2100) and MIN_EVENT_TIME.month == MIN_EVENT_TIME.day == 1
TEXT_LIKE = {
    STR: r"[!-~](?:[ -~]*[!-~])?",  # ASCII printable, no space at an end (and a length apart: see _accepted)
    CODE2: r"[A-Z]{2}", CODE3: r"[A-Z]{3}",
    TIME: (r"20\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
           r"(?:\.\d{1,6})?(?:Z|\+00:00)"),
}
SEPARATOR, SEPARATOR_PATTERN = "\x1f", r"\x1f"
# The JSON reader's type per field kind (times as text: checked, then cast).
READ_TYPES = {STR: pa.string(), CODE2: pa.string(), CODE3: pa.string(), TIME: pa.string(), AMOUNT: pa.float64(),
              PROB: pa.float64(), INT: pa.int64(), BOOL: pa.bool_()}
NEWLINE = 10
BRACE = 0x7B


class BlockReader:
    """Reads and checks blocks of one contract's messages (see the module docstring)."""

    def __init__(self, contract: Contract):
        self.contract = contract
        self._schema = pa.schema([pa.field(f.name, READ_TYPES[f.kind]) for f in contract.fields])
        self._lake = contract.arrow_schema()
        self._parse = pj.ParseOptions(explicit_schema=self._schema, unexpected_field_behavior="error")
        self._max_bytes = contract.max_event_bytes
        self._compile()

    # --- the checks

    def _compile(self) -> None:
        """The checks as few Arrow calls as possible: every call releases and takes back the
        GIL, which the lander thread may hold. The required text, code and time fields are
        joined into one string per row (with a separator no accepted value holds) and matched
        by one regular expression; the other fields get a call or three each."""
        patterns, self._joined, self._others = [], [], []
        for f in self.contract.fields:
            if f.required and f.kind in TEXT_LIKE:
                self._joined.append(f.name)
                patterns.append(TEXT_LIKE[f.kind])
            else:
                self._others.append(f)
        self._joined_pattern = r"\A" + SEPARATOR_PATTERN.join(patterns) + r"\z"
        self._versions = pa.array(range(1, self.contract.version + 1), pa.int64())

    def _field_ok(self, f, col) -> pa.Array:
        """True where the field's value is one the contract accepts (null where it is null)."""
        if f.name == "schema_version":  # ``Contract.validate``'s version checks (null: per event)
            return pc.is_in(col, value_set=self._versions)
        if f.kind in TEXT_LIKE:
            ok = pc.match_substring_regex(col, r"\A" + TEXT_LIKE[f.kind] + r"\z")
            if f.kind is STR:
                ok = pc.and_kleene(ok, pc.less_equal(pc.binary_length(col), MAX_TEXT_LENGTH))
        elif f.kind is AMOUNT:
            ok = pc.and_kleene(pc.greater_equal(col, MIN_AMOUNT), pc.less_equal(col, MAX_AMOUNT))  # NaN: false
        elif f.kind is PROB:
            ok = pc.and_kleene(pc.greater_equal(col, 0.0), pc.less_equal(col, 1.0))
        elif f.kind is INT:
            ok = pc.and_kleene(pc.greater_equal(col, INT32_MIN), pc.less_equal(col, INT32_MAX))
        else:  # BOOL: the reader takes only true and false
            ok = pc.is_valid(col)
        if f.required:
            return ok  # null (absent or null): not accepted here
        return pc.or_kleene(pc.is_null(col), ok)  # an optional field's null is its absence

    def _accepted(self, t: pa.Table, keys: list) -> pa.Array:
        """True where the contract accepts the row."""
        ok = None
        if self._joined:
            joined = pc.binary_join_element_wise(*(t.column(n) for n in self._joined), SEPARATOR)  # null if one is
            ok = pc.match_substring_regex(joined, self._joined_pattern)
            # Text of at most MAX_TEXT_LENGTH characters (ASCII: bytes). (A bounded repetition in
            # the pattern is ~10x slower.) No joined row longer than that: no part is.
            if len(joined) and (pc.max(pc.binary_length(joined)).as_py() or 0) > MAX_TEXT_LENGTH:
                for f in self.contract.fields:
                    if f.name in self._joined and f.kind is STR:
                        ok = pc.and_kleene(ok, pc.less_equal(pc.binary_length(t.column(f.name)), MAX_TEXT_LENGTH))
        for f in self._others:
            c = self._field_ok(f, t.column(f.name))
            ok = c if ok is None else pc.and_kleene(ok, c)
        if any(k is not None for k in keys):
            # The message key: none, empty, or the key field's bytes (accepted text is ASCII: its own UTF-8).
            uid = t.column(self.contract.key_field).cast(pa.binary())
            k = pa.array([k or None for k in keys], pa.binary()) if b"" in keys else pa.array(keys, pa.binary())
            ok = pc.and_kleene(ok, pc.equal(pc.coalesce(k, uid), uid))
        return pc.fill_null(ok, False)

    # --- reading

    def _read(self, values: list[bytes], keys: list) -> tuple[np.ndarray, pa.RecordBatch | None]:
        """One block: the positions of the accepted values and their rows, or raises."""
        data = b"\n".join(values)
        t = pj.read_json(io.BytesIO(data), read_options=pj.ReadOptions(block_size=max(1 << 16, len(data) // 2 + 1)),
                         parse_options=self._parse)
        if t.num_rows != len(values):  # a value held more than one object
            raise ValueError("rows do not line up with the messages")
        mask = self._accepted(t, keys)
        pos = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
        if not len(pos):
            return pos, None
        t = t.filter(mask) if len(pos) < t.num_rows else t
        batch = t.combine_chunks().to_batches()[0] if t.num_rows else None
        cols, fields = [], []
        for f in self.contract.fields:
            col = batch.column(f.name)
            if not f.required and col.null_count == len(col):
                continue  # as the per-event rows: a column only where a row has the field
            target = self._lake.field(f.name)
            if col.type != target.type:
                col = col.cast(target.type)  # an impossible date (Feb 30) raises here: the block is split
            cols.append(col)
            fields.append(target)
        return pos, pa.RecordBatch.from_arrays(cols, schema=pa.schema(fields))

    def _split(self, values: list[bytes], keys: list, lo: int, hi: int, out: list, smallest: int) -> None:
        try:
            pos, rows = self._read(values[lo:hi], keys[lo:hi])
        except Exception:  # noqa: BLE001 - anything the block reader refuses goes per event, which says why
            if hi - lo <= smallest:
                return
            mid = (lo + hi) // 2
            self._split(values, keys, lo, mid, out, smallest)
            self._split(values, keys, mid, hi, out, smallest)
            return
        if rows is not None:
            out.append((pos + lo, rows))

    def read(self, keys: Sequence, values: Sequence) -> list[tuple[np.ndarray, pa.RecordBatch]]:
        """The messages of the block the contract accepts: (their positions in ``values``,
        ascending; their rows in the lake's types, without the Kafka columns), per part read.
        A message at no position is for ``Contract.parse_message`` to decide."""
        n = len(values)
        keys = list(keys)
        values = list(values)
        data = None
        try:
            data = b"\n".join(values)
        except TypeError:  # a null value
            pass
        whole = (data is not None and data[:1] == b"{" and data.count(b"\n") == n - 1
                 and data.count(b"\n{") == n - 1 and max(map(len, values)) <= self._max_bytes)
        if whole:
            index = None
        else:
            index = [i for i, v in enumerate(values)
                     if v and v[0] == BRACE and NEWLINE not in v and len(v) <= self._max_bytes]
            values = [values[i] for i in index]
            keys = [keys[i] for i in index]
        out: list = []
        if values:
            self._split(values, keys, 0, len(values), out, max(MIN_SPLIT, len(values) >> SPLIT_DEPTH))
        if index is not None:
            where = np.asarray(index, dtype=np.int64)
            out = [(where[pos], rows) for pos, rows in out]
        return out


@lru_cache(maxsize=None)
def block_reader(contract: Contract) -> BlockReader | None:
    """The contract's block reader, or None when a field kind has no column checks."""
    if any(f.kind not in READ_TYPES for f in contract.fields):
        return None
    return BlockReader(contract)
