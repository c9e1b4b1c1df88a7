"""Declared data-quality checks of events, per contract, run on a batch as a DataFrame.

Two tiers guard what lands in the lake, and a dead letter's reason always starts with
``check <contract>.<field>.<check>:`` naming the one that failed:

1. **The contract** (``skewless.contracts``), per event while it is decoded: JSON, object,
   known fields and version, required fields, each field's type and form (text, codes,
   ISO time with a zone), amounts, probabilities and times in range, size, message key.
   These stay per event because a row cannot be built without them, and because the
   streaming job and the online API parse with the same contract.
2. **These checks** (pandera), per batch, over the rows tier 1 built: the value rules
   stated again from the contract's own constants (not null, ranges, code patterns), and
   the rules a single event cannot know or the contract did not state: allowed values,
   plausible event times (not ahead of the Kafka message's timestamp by more than
   ``ingest.max_event_time_ahead_s``), and one event per business id within a batch (the
   first offset lands; a later copy is a dead letter — across batches the ETL keeps the
   first landed copy).

Checks are declared as data (``EventCheck``: a name, a column, a pandera ``Check``),
derived from the contract's field kinds plus ``EXTRA``; ``schema`` builds one pandera
``DataFrameSchema`` of them, and ``failures`` runs it lazily (every failure of every row)
and maps each failing row back to its first failing check. A batch is validated once, at
flush, so the cost is one vectorised pass per batch (``skewless bench ingest``). Rows the
block reader accepted (``skewless.contract_columns``) are already within every check their
field kinds imply; ``block_failures`` runs the rest on them as plain pandas/NumPy vector
calls, with the same names and reasons, so ingestion and the streaming job skip pandera for
them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

# Imported with the module, not on first use: pandera's import (~1 s) is a startup cost of
# the process that ingests, never paid inside the first batch.
import pandera.pandas as pa

from skewless.contracts import (AMOUNT, CODE2, CODE3, CODE_PATTERNS, CONTRACTS, MAX_AMOUNT, MAX_EVENT_TIME,
                                MIN_AMOUNT, MIN_EVENT_TIME, PROB, TIME, Contract)

if TYPE_CHECKING:
    import pandas as pd

# Allowed values of categorical fields (what the simulator and the API send).
CHANNELS = ("pos", "web", "app")
# The column holding each row's Kafka message timestamp (UTC), beside the contract's own.
KAFKA_TIME = "_kafka_time"
DEFAULT_MAX_AHEAD_S = 3600.0


@dataclass(frozen=True)
class EventCheck:
    """One declared check: ``name`` (``<field>.<rule>``, or ``<rule>`` across fields),
    the column it reads (None: the whole row), and the pandera check that decides it."""

    name: str
    column: str | None
    check: pa.Check
    description: str


def _unique_first(s: "pd.Series") -> "pd.Series":
    return ~s.duplicated(keep="first")


def declared(contract: Contract, max_ahead_s: float = DEFAULT_MAX_AHEAD_S) -> tuple[EventCheck, ...]:
    """Every batch check of ``contract``, in the order a failing row reports them."""
    import pandas as pd

    out: list[EventCheck] = []
    for f in contract.fields:
        if f.kind is AMOUNT:
            out.append(EventCheck(f"{f.name}.in_range", f.name, pa.Check.in_range(MIN_AMOUNT, MAX_AMOUNT),
                                  f"{f.name} must be in [{MIN_AMOUNT:g}, {MAX_AMOUNT:g}]"))
        elif f.kind is PROB:
            out.append(EventCheck(f"{f.name}.in_range", f.name, pa.Check.in_range(0.0, 1.0), f"{f.name} must be in [0, 1]"))
        elif f.kind is TIME:
            out.append(EventCheck(f"{f.name}.in_range", f.name, pa.Check.in_range(
                pd.Timestamp(MIN_EVENT_TIME), pd.Timestamp(MAX_EVENT_TIME), include_max=False),
                f"{f.name} must be in [{MIN_EVENT_TIME:%Y}, {MAX_EVENT_TIME:%Y})"))
        elif f.kind is CODE2 or f.kind is CODE3:
            n = 2 if f.kind is CODE2 else 3
            out.append(EventCheck(f"{f.name}.code", f.name, pa.Check.str_matches(CODE_PATTERNS[n]),
                                  f"{f.name} must be {n} upper-case letters"))
    for column, allowed in EXTRA.get(contract.name, {}).get("allowed", {}).items():
        out.append(EventCheck(f"{column}.allowed", column, pa.Check.isin(list(allowed)),
                              f"{column} must be one of {', '.join(allowed)}"))
    if contract.name in EXTRA and EXTRA[contract.name].get("not_ahead_of_kafka"):
        t = contract.time_field
        ahead = pd.Timedelta(seconds=max_ahead_s)

        def not_ahead(df: "pd.DataFrame", t=t, ahead=ahead) -> "pd.Series":
            if KAFKA_TIME not in df:
                return pd.Series(True, index=df.index)
            kafka = df[KAFKA_TIME]
            return kafka.isna() | (df[t] <= kafka + ahead)

        out.append(EventCheck(f"{t}.not_ahead_of_kafka", None, pa.Check(not_ahead),
                              f"{t} must be at most {max_ahead_s:g} s after the Kafka message's timestamp"))
    if contract.id_field:
        out.append(EventCheck(f"{contract.id_field}.unique_in_batch", contract.id_field, pa.Check(_unique_first),
                              f"one event per {contract.id_field} in a batch (the first offset lands)"))
    return tuple(out)


# Rules the contract's field kinds do not imply, per contract.
EXTRA: dict[str, dict] = {
    "transactions": {"allowed": {"channel": CHANNELS}, "not_ahead_of_kafka": True},
    # Labels are left out of not_ahead_of_kafka: a chargeback is known when it is labelled,
    # and the simulator sends labels ahead of their time in one go.
    "predictions": {"not_ahead_of_kafka": True},
}


def kafka_times(stamps_ms: list, index) -> "pd.Series":
    """Kafka message timestamps (ms) as the ``KAFKA_TIME`` column. A missing one, or one
    before ``MIN_EVENT_TIME`` (-1, a producer that set no clock), is unknown: NaT, which
    ``not_ahead_of_kafka`` lets pass."""
    import pandas as pd
    import pyarrow

    floor = int(MIN_EVENT_TIME.timestamp() * 1000)
    ms = np.asarray(stamps_ms, dtype=np.float64)  # None: NaN (exact: ms timestamps are far below 2**53)
    unknown = np.isnan(ms) | (ms < floor)
    # (a timestamp past 2**62 ms, 146 million years, is that: no event time is ahead of either)
    times = pyarrow.array(np.where(unknown, 0, np.minimum(ms, 2.0**62)).astype(np.int64), mask=unknown).cast(
        pyarrow.timestamp("ms", tz="UTC")).to_pandas()
    return times.set_axis(index).rename(KAFKA_TIME)


def columns(contract: Contract) -> list[str]:
    """The contract's columns the checks read (the rest of a row is not converted: a
    required field with no other check is never null, the contract saw to that)."""
    names = set()
    for c in declared(contract):
        if c.column:
            names.add(c.column)
    names.add(contract.time_field)
    return [f.name for f in contract.fields if f.name in names]


@lru_cache(maxsize=32)
def schema(contract_name: str, max_ahead_s: float = DEFAULT_MAX_AHEAD_S) -> tuple[pa.DataFrameSchema, tuple]:
    """The pandera schema of a contract's batch checks, and the checks it was built from."""
    contract = CONTRACTS[contract_name]
    checks = declared(contract, max_ahead_s)
    required = {f.name for f in contract.fields if f.required}
    cols = {}
    for name in columns(contract):
        own = [c.check for c in checks if c.column == name]
        cols[name] = pa.Column(checks=own, nullable=name not in required, required=name in required)
    wide = [c.check for c in checks if c.column is None]
    return pa.DataFrameSchema(cols, checks=wide, strict=False, coerce=False), checks


def failures(contract: Contract, df: "pd.DataFrame",
             max_ahead_s: float = DEFAULT_MAX_AHEAD_S) -> dict[object, tuple[str, str]]:
    """The rows of ``df`` that fail a check: index label -> (check name, reason). A row
    failing several checks is reported for the first declared one (not null first)."""
    if df.empty:
        return {}
    sch, checks = schema(contract.name, max_ahead_s)
    try:
        sch.validate(df, lazy=True)
        return {}
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    order = {c: i for i, c in enumerate(checks)}
    by_column: dict[str, list[EventCheck]] = {}
    for c in checks:
        by_column.setdefault(c.column, []).append(c)
    found: dict[object, tuple[int, str, str]] = {}
    for case in cases.itertuples(index=False):
        if case.index is None or (isinstance(case.index, float) and case.index != case.index):
            # A failure of the frame, not of a row (a required column missing): every row.
            raise ValueError(f"event batch cannot be checked: {case.check} on {case.column}")
        if case.schema_context == "Column" and case.check == "not_nullable":
            rank, name, why = -1, f"{case.column}.not_null", f"{case.column} must not be null"
        else:
            own = by_column.get(case.column if case.schema_context == "Column" else None, [])
            number = int(case.check_number)
            if number >= len(own):
                continue
            c = own[number]
            rank, name, why = order[c], c.name, c.description
        value = case.failure_case if case.schema_context == "Column" else None
        if value is not None:
            why = f"{why}, got {str(value)[:60]!r}"
        prev = found.get(case.index)
        if prev is None or rank < prev[0]:
            found[case.index] = (rank, f"{contract.name}.{name}", why)
    return {i: (name, why) for i, (_, name, why) in found.items()}


# A check of the block reader's rows needs no pandera when the check is implied by a field
# kind (the reader accepts only values within the kinds' ranges and forms) or is one of these.
TIME_NS = "datetime64[ns, UTC]"


@lru_cache(maxsize=32)
def _block_plan(contract_name: str, max_ahead_s: float) -> tuple[tuple[str, EventCheck, tuple], ...] | None:
    """The declared checks a block-accepted row still needs, in declared order, as
    (kind, check, allowed values); None when one is of a kind ``block_failures`` does not know."""
    contract = CONTRACTS[contract_name]
    implied = {f"{f.name}.in_range" for f in contract.fields if f.kind in (AMOUNT, PROB, TIME)}
    implied |= {f"{f.name}.code" for f in contract.fields if f.kind in (CODE2, CODE3)}
    extra = EXTRA.get(contract_name, {})
    allowed = {f"{c}.allowed": tuple(v) for c, v in extra.get("allowed", {}).items()}
    ahead = f"{contract.time_field}.not_ahead_of_kafka" if extra.get("not_ahead_of_kafka") else None
    unique = f"{contract.id_field}.unique_in_batch" if contract.id_field else None
    plan = []
    for c in declared(contract, max_ahead_s):
        if c.name in implied:
            continue
        if c.name in allowed:
            plan.append(("allowed", c, allowed[c.name]))
        elif c.name == ahead:
            plan.append(("ahead", c, ()))
        elif c.name == unique:
            plan.append(("unique", c, ()))
        else:
            return None
    return tuple(plan)


def _timedelta_ns(seconds: float) -> int:
    """``pd.Timedelta(seconds=...)`` in nanoseconds: the bound ``not_ahead_of_kafka`` adds."""
    import pandas as pd

    return int(pd.Timedelta(seconds=seconds).value)


def block_failures(contract: Contract, df: "pd.DataFrame", kafka_ms: np.ndarray,
                   max_ahead_s: float = DEFAULT_MAX_AHEAD_S) -> dict[object, tuple[str, str]] | None:
    """``failures`` for rows the block reader accepted (``skewless.contract_columns``), in
    NumPy and pandas' vectorised calls instead of pandera: the same rows, check names and
    reasons. Those rows are within every check their field kinds declare, so only the rules
    beyond the contract are left: allowed values, the event time not ahead of the Kafka
    timestamp (``kafka_ms``: one per row, milliseconds; NaN or before ``MIN_EVENT_TIME``:
    unknown, which passes, as in ``kafka_times``), one event per id. None when a declared
    check is of another kind (then run ``failures``)."""
    plan = _block_plan(contract.name, max_ahead_s)
    if plan is None:
        return None
    n = len(df)
    if not n:
        return {}
    first = np.full(n, -1, dtype=np.int64)
    for rank, (kind, check, values) in enumerate(plan):
        if kind == "allowed":
            if check.column not in df:  # an optional column no row has: every value null, which passes
                continue
            s = df[check.column]
            bad = ~(s.isin(list(values)) | s.isna()).to_numpy(dtype=bool)
        elif kind == "ahead":
            ms = np.asarray(kafka_ms, dtype=np.float64)
            floor = MIN_EVENT_TIME.timestamp() * 1000
            known = ms >= floor  # (NaN compares False: unknown)
            # Exact integer nanoseconds; a Kafka time past 2100 (4.1e12 ms) leaves no event time ahead of it.
            k = np.where(known, np.minimum(ms, 5e12), 0).astype(np.int64)
            t_ns = df[contract.time_field].astype(TIME_NS).astype("int64").to_numpy()
            bad = known & (t_ns > k * 1_000_000 + _timedelta_ns(max_ahead_s))
        else:
            bad = df[check.column].duplicated(keep="first").to_numpy(dtype=bool)
        first[bad & (first < 0)] = rank
    out: dict[object, tuple[str, str]] = {}
    for i in np.flatnonzero(first >= 0).tolist():
        _, check, _ = plan[first[i]]
        why = check.description
        if check.column is not None:
            why = f"{why}, got {str(df[check.column].iat[i])[:60]!r}"
        out[df.index[i]] = (f"{contract.name}.{check.name}", why)
    return out
