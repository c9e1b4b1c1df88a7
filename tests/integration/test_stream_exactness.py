"""The streaming job's values are the offline values, at any instant: a property test.

Random event streams (bursts, events at the same instant, idle gaps longer than every
window, events arriving out of order) go through the stream's micro-batch code
(``etl.stream.Processor``: real Redis state, Feast's own online writes) in random
micro-batches, with the stream's clock at each batch's arrival time. At random instants
``t`` — including long after the last event, when every window has decayed — the value
Feast's ``get_online_features`` returns is compared with:

* an independent brute-force computation of the semantics over the events known by then
  (``[b - w, b)``, ``b`` = t's hop boundary), and
* the offline table's point-in-time value at ``t`` (the batch job's code over all events),
  whenever every event before ``b`` had arrived by ``t``.

Counts and distinct counts equal, min/max/last equal, sums and means to 1e-9 relative.
Spark is not involved here (``test_stream_job`` runs the real Spark query); the Kafka
records are built as Spark's Kafka source delivers them.
"""

from __future__ import annotations

import itertools
import json
import math
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import redis
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from etl import windows
from etl.online_writer import OnlineWriter
from etl.stream import Processor
from etl.stream_state import StreamState
from skewless.features import store as feast_store
from skewless.features.definitions import Definitions
from skewless.features.dsl import Aggregation as A
from skewless.features.dsl import Entity, EventSource, WindowedView
from tests.isolation import with_overrides

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 1, tzinfo=timezone.utc).timestamp()
LATENESS = 5.0  # seconds an event may arrive after its time (out of order within it)
user = Entity("user", "user_id")
AGGREGATIONS = (
    A("count", "3s"), A("count", "10s"), A("sum", "10s", "amount"), A("mean", "3s", "amount"),
    A("min", "10s", "amount"), A("max", "3s", "amount"),
    A("distinct_count", "10s", "merchant_id", name="merchants_10s"),
    A("last", "10s", "country", name="last_country", dtype="string"),
    A("last_time", "10s", name="last_time_10s"),
)
# A whole-second hop and a sub-second one (the user views' 250 ms).
VIEWS = {hop: WindowedView(f"stream_exact_{hop}", (user,), EventSource("transactions", "transactions", "event_time"),
                           hop=hop, aggregations=AGGREGATIONS) for hop in ("1s", "250ms")}
_example = itertools.count()
RUN = uuid.uuid4().hex[:8]  # Feast's online store outlives a test run: entities of this run only


@pytest.fixture(scope="module")
def online(services, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream-exact")
    settings = with_overrides(services, state_dir=str(tmp / "state"), lake_path=str(tmp / "lake"),
                              feast_project="stream_exact")
    definitions = Definitions(entities=(user,), views=tuple(VIEWS.values()), services=(), module="test")
    feast_store.apply(settings, definitions)
    client = redis.Redis.from_url(settings.redis_url)
    yield settings, feast_store.feature_store(settings), OnlineWriter(settings), client
    for key in client.scan_iter(match="skewless:stream:stream_exact_*"):
        client.delete(key)


def boundary(view: WindowedView, t: float) -> float:
    """t's hop boundary (unix s)."""
    h = view.hop_td.total_seconds()
    return math.floor(round(t * 1e6) / (h * 1e6)) * h


def brute_force(view: WindowedView, events: pd.DataFrame, user_id: str, t: float) -> dict:
    b = boundary(view, t)
    ev = events[events.user_id == user_id]
    out = {}
    for a in view.aggregations:
        w = a.window_td.total_seconds()
        e = ev[(ev.tau >= b - w) & (ev.tau < b)].sort_values(["tau", "country"], kind="stable")
        f = a.function
        out[a.feature_name] = (
            len(e) if f == "count" else
            float(sum(e.amount)) if f == "sum" else
            (float(e.amount.mean()) if len(e) else None) if f == "mean" else
            (float(e.amount.min()) if len(e) else None) if f == "min" else
            (float(e.amount.max()) if len(e) else None) if f == "max" else
            int(e.merchant_id.nunique()) if f == "distinct_count" else
            (e.country.iloc[-1] if len(e) else None) if f == "last" else
            (float(e.tau.iloc[-1]) if len(e) else None)
        )
    return out


def same(want, got) -> bool:
    if want is None:
        return got is None or (isinstance(got, float) and math.isnan(got))
    if got is None:
        return False
    if isinstance(want, float):
        return math.isclose(want, got, rel_tol=1e-9, abs_tol=1e-9)
    return want == got


@st.composite
def streams(draw):
    """Events: bursts and ties, gaps longer than every window; arrival within LATENESS."""
    n_users = draw(st.integers(1, 3))
    t, events = 0.0, []
    for _ in range(draw(st.integers(1, 40))):
        t += draw(st.sampled_from([0.0, 0.0, 0.3, 0.999, 1.0, 2.5, 4.0, 11.0, 25.0]))  # ties, bursts, gaps
        events.append({
            "user": draw(st.integers(0, n_users - 1)), "tau": round(t + draw(st.sampled_from([0, 0.25, 0.5])), 3),
            "amount": draw(st.sampled_from([0.01, 1.5, 10.0, 99.99, 1234.56, 0.1])),
            "merchant": draw(st.integers(0, 3)), "country": draw(st.sampled_from(["DE", "FR", "US"])),
            "delay": draw(st.sampled_from([0.0, 0.0, 0.2, 1.0, 3.0, LATENESS])),
        })
    batches = sorted(draw(st.lists(st.floats(0, t + LATENESS + 1, allow_nan=False), max_size=8)))
    queries = draw(st.lists(st.floats(-1, t + LATENESS + 2, allow_nan=False), min_size=1, max_size=10))
    return events, batches, sorted(queries + [t + LATENESS + 11.5, t + LATENESS + 60.0])


def record(ex: int, e: dict, i: int) -> dict:
    uid = f"x{ex}-u{e['user']}"
    value = {"transaction_id": f"x{ex}-t{i}", "user_id": uid, "merchant_id": f"m{e['merchant']}",
             "amount": e["amount"], "currency": "EUR", "country": e["country"], "channel": "web",
             "device_id": "d", "event_time": datetime.fromtimestamp(T0 + e["tau"], timezone.utc).isoformat()}
    return {"topic": "transactions", "partition": 0, "offset": i, "key": uid.encode(),
            "value": json.dumps(value).encode(),
            "timestamp": pd.Timestamp(T0 + e["tau"] + e["delay"], unit="s", tz="UTC")}


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(streams())
@pytest.mark.parametrize("hop", list(VIEWS))
def test_online_values_equal_the_offline_values_at_any_instant(online, hop, stream):
    settings, store, writer, client = online
    view = VIEWS[hop]
    features = [f"{view.name}:{f}" for f in view.features]
    events, cuts, queries = stream
    ex = f"{RUN}{next(_example)}"
    clock = {"now": T0}
    state = StreamState(client, f"stream_exact_{ex}")
    proc = Processor(with_overrides(settings, topics={"transactions": "transactions"}), (view,), state, writer,
                     clock=lambda: clock["now"])
    recs = sorted((record(ex, e, i) for i, e in enumerate(events)), key=lambda r: r["timestamp"])
    for offset, r in enumerate(recs):  # Kafka's offsets follow arrival
        r["offset"] = offset
    arrivals = np.array([r["timestamp"].timestamp() for r in recs])
    frame = pd.DataFrame([{"user_id": f"x{ex}-u{e['user']}", "tau": T0 + e["tau"], "amount": e["amount"],
                           "merchant_id": f"m{e['merchant']}", "country": e["country"]} for e in events])
    offline = windows.events_rows(view, frame.rename(columns={"tau": "_ts"}).assign(
        _ts=lambda d: pd.to_datetime(d["_ts"], unit="s", utc=True)))
    users = sorted(frame.user_id.unique())
    applied_until, batch_id, fully_known = -math.inf, 0, 0
    batch_times = [T0 + c for c in cuts]
    for q in queries:
        t = T0 + q
        # Micro-batches that ran before t, each with what had arrived by then.
        for bt in [b for b in batch_times if applied_until < b <= t] + [t]:
            sel = (arrivals > applied_until) & (arrivals <= bt)
            if sel.any():
                clock["now"] = bt
                proc.apply(pd.DataFrame([r for r, s in zip(recs, sel) if s]), batch_id)
                batch_id += 1
            applied_until = bt
        clock["now"] = t
        proc.publisher.publish_due(t)
        got = store.get_online_features(features=features, entity_rows=[{"user_id": u} for u in users]).to_dict()
        known = frame[arrivals_by(frame, recs) <= t]
        b = boundary(view, t)
        for i, u in enumerate(users):
            want = brute_force(view, known, u, t)
            have_history = (known[known.user_id == u].tau < b).any()
            for name, value in want.items():
                g = got[name][i]
                if not have_history:
                    assert g is None, (u, t - T0, name, g, events, cuts)  # no event yet: not found
                    continue
                assert same(value, g), (u, t - T0, name, value, g, json.dumps(events), json.dumps(cuts))
            # Every event before t's boundary had arrived: the offline table's value too.
            if (frame[(frame.user_id == u)].tau < b).sum() == (known[known.user_id == u].tau < b).sum():
                fully_known += 1
                rows = offline[(offline.user_id == u) & (offline[windows.TS] <= pd.Timestamp(t, unit="s", tz="UTC"))]
                if len(rows):
                    row = rows.iloc[-1]
                    for name in view.features:
                        off = row[name]
                        off = None if off is None or (isinstance(off, float) and math.isnan(off)) else off
                        assert same(off if not isinstance(off, (np.integer, np.floating)) else off.item(),
                                    got[name][i]), ("offline", u, t - T0, name, off, got[name][i])


def arrivals_by(frame: pd.DataFrame, recs: list[dict]) -> np.ndarray:
    """Each event's arrival time, in ``frame``'s order (records are sorted by arrival)."""
    by_id = {json.loads(r["value"])["transaction_id"]: r["timestamp"].timestamp() for r in recs}
    ids = [f"{r['user_id'].split('-')[0]}-t{i}" for i, r in frame.iterrows()]
    return np.array([by_id[i] for i in ids])
