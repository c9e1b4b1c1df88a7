"""Declared data-quality checks of the offline feature tables, derived from the DSL.

After each ETL run, every view's table (the rows this run wrote, ``[start, end)``) is
checked as declared here; a failed check fails the job with a report of every failure
(``skewless etl run`` exits non-zero and names each check and its count).

Two kinds, both derived from the view's declaration, so a new view or aggregation is
checked without writing anything:

* **Row rules** (``RowRule``): a rule every row must meet — join keys and the row time not
  null; counts, sums and distinct counts never null (an empty window is 0); counts >= 0;
  sums, means, minima and maxima within the bounds the source column's event check
  declares (``skewless.event_checks``: an amount is in [0.01, 1e6], so a mean is too, and
  a sum is >= 0); ``last_time`` a time in the contract's range. The ETL counts the rows
  breaking each rule in one Spark aggregation (``bad:<rule>`` in the table's profile).
* **Table checks** over the profile (pandera): each row rule broken by 0 rows; row counts
  against the raw events (a view with source events in the range wrote rows; at most
  ``events x (1 + windows)`` rows, as each row is an event entering or leaving a window);
  freshness (the newest source event's row is in the table).

The profile is one row per view (``PROFILE_COLUMNS`` plus ``bad:<rule>``), computed by the
ETL; ``evaluate`` runs the checks with pandera and returns the failures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from skewless.contracts import CONTRACTS, MAX_EVENT_TIME, MIN_EVENT_TIME
from skewless.features.dsl import WindowedView

TS = "event_timestamp"  # a view table's row time (etl.windows.TS)
# The profile's table-level figures (epoch seconds for times; null when there is none).
PROFILE_COLUMNS = ("rows", "events", "events_in_range", "newest_event", "newest_row", "range_end")


@dataclass(frozen=True)
class RowRule:
    """A rule every row of a view's table must meet; ``name`` is ``<column>.<rule>``."""

    name: str
    column: str
    kind: Literal["not_null", "min", "max"]
    bound: float | None = None
    description: str = ""


@dataclass(frozen=True)
class Failure:
    view: str
    check: str  # "<view>.<column>.<rule>" or "<view>.<rule>"
    count: int | float | None  # rows breaking a row rule; the observed figure of a table check
    description: str

    def line(self) -> str:
        return f"{self.check}: {self.description} (observed {self.count})"


def _source_bounds(view: WindowedView, column: str) -> tuple[float | None, float | None]:
    """The declared range of a source column (its contract's in_range event check)."""
    from skewless import event_checks

    contract = CONTRACTS.get(view.source.contract)
    if contract is None:
        return None, None
    for c in event_checks.declared(contract):
        if c.column == column and c.name == f"{column}.in_range":
            stats = c.check.statistics
            return float(stats["min_value"]), float(stats["max_value"])
    return None, None


def row_rules(view: WindowedView) -> tuple[RowRule, ...]:
    """Every row rule of ``view``'s table."""
    out = [RowRule(f"{k}.not_null", k, "not_null", description=f"{k} is never null") for k in view.join_keys]
    out.append(RowRule(f"{TS}.not_null", TS, "not_null", description="every row has its time"))
    for a in view.aggregations:
        f = a.feature_name
        if a.function in ("count", "distinct_count", "sum"):
            out.append(RowRule(f"{f}.not_null", f, "not_null", description=f"{a.function} of an empty window is 0"))
        if a.function in ("count", "distinct_count"):
            out.append(RowRule(f"{f}.min", f, "min", 0, f"{f} >= 0"))
        elif a.function in ("sum", "mean", "min", "max") and a.column:
            lo, hi = _source_bounds(view, a.column)
            if a.function == "sum":
                if lo is not None and lo >= 0:
                    out.append(RowRule(f"{f}.min", f, "min", 0, f"{f} >= 0 ({a.column} >= {lo:g})"))
            else:
                if lo is not None:
                    out.append(RowRule(f"{f}.min", f, "min", lo, f"{f} >= {lo:g} (as {a.column})"))
                if hi is not None:
                    out.append(RowRule(f"{f}.max", f, "max", hi, f"{f} <= {hi:g} (as {a.column})"))
        elif a.function == "last_time":
            out.append(RowRule(f"{f}.min", f, "min", MIN_EVENT_TIME.timestamp(), f"{f} on or after {MIN_EVENT_TIME:%Y}"))
            out.append(RowRule(f"{f}.max", f, "max", MAX_EVENT_TIME.timestamp(), f"{f} before {MAX_EVENT_TIME:%Y}"))
    return tuple(out)


def _windows(view: WindowedView) -> int:
    return len({a.window_td for a in view.aggregations})


def table_checks(view: WindowedView) -> dict[str, tuple[Any, str]]:
    """The table-level checks of ``view``: name -> (pandera check over the profile, description)."""
    import pandera.pandas as pa

    hop = view.hop_td.total_seconds()
    n = 1 + _windows(view)
    return {
        "rows_vs_events": (pa.Check(lambda p: (p["events_in_range"] == 0) | (p["rows"] > 0)),
                           "source events in the range, so rows are written"),
        "rows_at_most": (pa.Check(lambda p, n=n: p["rows"] <= p["events"] * n),
                         f"at most events x {n} rows (each an event entering or leaving a window)"),
        "fresh": (pa.Check(lambda p, hop=hop: p["newest_event"].isna() | (p["newest_event"] >= p["range_end"] - hop)
                           | (p["newest_row"] > p["newest_event"])),
                  "the newest source event's row is in the table"),
    }


def evaluate(view: WindowedView, profile: dict[str, Any]) -> list[Failure]:
    """Run ``view``'s declared checks over its profile (one dict of figures, with
    ``bad:<rule>`` per row rule); the failures, empty when the table passes."""
    import pandas as pd
    import pandera.pandas as pa

    rules = row_rules(view)
    wide = table_checks(view)
    cols = {f"bad:{r.name}": pa.Column(checks=[pa.Check.eq(0)], nullable=False) for r in rules}
    schema = pa.DataFrameSchema(cols, checks=[c for c, _ in wide.values()], strict=False)
    frame = pd.DataFrame([{**{c: profile.get(c) for c in PROFILE_COLUMNS},
                           **{f"bad:{r.name}": profile[f"bad:{r.name}"] for r in rules}}], dtype="float64")
    try:
        schema.validate(frame, lazy=True)
        return []
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    by_rule = {f"bad:{r.name}": r for r in rules}
    names = list(wide)
    out: dict[str, Failure] = {}
    for case in cases.itertuples(index=False):
        if case.schema_context == "Column":
            r = by_rule[case.column]
            count = profile[case.column]
            out[r.name] = Failure(view.name, f"{view.name}.{r.name}", int(count) if count == count else None,
                                  f"{r.description}: rows breaking it")
        else:
            name = names[int(case.check_number)]
            observed = {"rows_vs_events": profile.get("rows"), "rows_at_most": profile.get("rows"),
                        "fresh": profile.get("newest_row")}[name]
            out[name] = Failure(view.name, f"{view.name}.{name}", observed, wide[name][1])
    return list(out.values())
