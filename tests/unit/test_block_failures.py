"""``event_checks.block_failures`` (the checks of rows the block reader accepted, vectorised)
against ``event_checks.failures`` (pandera): the same failing rows, check names and reasons,
on frames whose rows are within their field kinds (what the block reader accepts) but break
the rules beyond them — channels off the list or null, event times around the
not-ahead-of-Kafka bound to the nanosecond, unknown Kafka times, duplicated ids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skewless import event_checks
from skewless.contracts import CONTRACTS, LABELS, PREDICTIONS, TRANSACTIONS

KAFKA_MS = 1_772_359_200_000  # 2026-03-01T10:00:00Z
FLOOR_MS = 946_684_800_000  # 2000-01-01: before it a Kafka time is unknown
AHEAD_S = 3600.0
AHEAD_NS = int(AHEAD_S * 1e9)

# Event times relative to the Kafka time: far behind, at, and around the bound by 1 ns / 1 us.
OFFSETS_NS = [-86_400 * 10**9, 0, AHEAD_NS - 1_000, AHEAD_NS - 1, AHEAD_NS, AHEAD_NS + 1, AHEAD_NS + 1_000,
              2 * AHEAD_NS]
KAFKA_TIMES = [float(KAFKA_MS), float(KAFKA_MS + 1), np.nan, -1.0, float(FLOOR_MS - 1), float(FLOOR_MS), 6e12]


def _frame(rows: list[tuple[str | None, int, int, int]], time_unit: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Transactions: (channel, event-time offset index, Kafka time index, id) per row."""
    kafka = np.array([KAFKA_TIMES[k] for _, _, k, _ in rows])
    base = np.where(np.isnan(kafka) | (kafka < FLOOR_MS), KAFKA_MS, np.minimum(kafka, 4e12)).astype(np.int64)
    t_ns = base * 1_000_000 + np.array([OFFSETS_NS[o] for _, o, _, _ in rows], dtype=np.int64)
    t_ns = np.maximum(t_ns, FLOOR_MS * 1_000_000)  # within the time kind's range, as the block reader accepts
    times = pd.to_datetime(t_ns, utc=True).as_unit(time_unit)
    strings = pd.ArrowDtype(__import__("pyarrow").string())
    df = pd.DataFrame({
        "transaction_id": pd.array([f"t{i}" for *_, i in rows], dtype=strings),
        "amount": 12.5, "currency": "EUR", "country": "DE",
        "channel": pd.array([c for c, *_ in rows], dtype=strings),
        "event_time": times,
    }, index=pd.Index(range(100, 100 + len(rows)), name="_kafka_offset"))
    return df, kafka


def _pandera(contract, df: pd.DataFrame, kafka_ms: np.ndarray) -> dict:
    checked = df.assign(**{event_checks.KAFKA_TIME: event_checks.kafka_times(kafka_ms.tolist(), df.index)})
    return event_checks.failures(contract, checked, AHEAD_S)


ROWS = st.lists(st.tuples(st.sampled_from(["pos", "web", "app", "fax", "", "POS"]),
                          st.integers(0, len(OFFSETS_NS) - 1), st.integers(0, len(KAFKA_TIMES) - 1),
                          st.integers(0, 6)), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(rows=ROWS, unit=st.sampled_from(["us", "ns"]))
def test_block_failures_equal_pandera_row_for_row_with_the_same_reasons(rows, unit):
    df, kafka = _frame(rows, unit)
    fast = event_checks.block_failures(TRANSACTIONS, df, kafka, AHEAD_S)
    assert fast == _pandera(TRANSACTIONS, df, kafka)


def test_each_rule_is_caught_and_the_first_declared_is_named():
    # row 0: channel off the list and ahead (the channel is declared first); row 1: only ahead;
    # row 2: a second copy of row 3's id; row 3: good; row 4: ahead of an unknown Kafka time.
    df, kafka = _frame([("fax", 6, 0, 0), ("web", 6, 0, 1), ("pos", 0, 0, 3), ("app", 0, 0, 3),
                        ("web", 7, 2, 4)], "us")
    fast = event_checks.block_failures(TRANSACTIONS, df, kafka, AHEAD_S)
    assert {k: v[0] for k, v in fast.items()} == {
        100: "transactions.channel.allowed", 101: "transactions.event_time.not_ahead_of_kafka",
        103: "transactions.transaction_id.unique_in_batch"}
    assert fast[100][1].endswith(", got 'fax'") and fast[103][1].endswith(", got 't3'")
    assert fast == _pandera(TRANSACTIONS, df, kafka)


@pytest.mark.parametrize("contract", [TRANSACTIONS, LABELS, PREDICTIONS], ids=lambda c: c.name)
def test_every_shipped_contract_has_a_plan_and_an_empty_frame_fails_nothing(contract):
    assert event_checks._block_plan(contract.name, AHEAD_S) is not None
    assert event_checks.block_failures(contract, pd.DataFrame(), np.array([]), AHEAD_S) == {}


def test_a_check_of_a_kind_it_does_not_know_hands_back_to_pandera(monkeypatch):
    extra = dict(event_checks.EXTRA)
    extra["transactions"] = {**extra["transactions"], "allowed": {"channel": ("pos",), "currency": ("EUR",)}}
    monkeypatch.setattr(event_checks, "EXTRA", extra)
    event_checks._block_plan.cache_clear()
    try:
        # an allowed list is a known kind: still planned, and applied
        df, kafka = _frame([("pos", 0, 0, 0)], "us")
        assert event_checks.block_failures(TRANSACTIONS, df, kafka, AHEAD_S) == {}
        real = event_checks.declared

        def with_unknown(contract, max_ahead_s=AHEAD_S):
            import pandera.pandas as pa
            return (*real(contract, max_ahead_s),
                    event_checks.EventCheck("amount.round", "amount", pa.Check(lambda s: s == s.round(2)), "cents"))

        monkeypatch.setattr(event_checks, "declared", with_unknown)
        event_checks._block_plan.cache_clear()
        assert event_checks.block_failures(CONTRACTS["transactions"], df, kafka, AHEAD_S) is None
    finally:
        event_checks._block_plan.cache_clear()
