"""``/metrics`` tells how fresh the streamed features are, from the status hash the
streaming job writes into the online store (``skewless.features.stream_status``), on the
shared real Redis (a project of this module only, its keys deleted after) and a real
Feast registry. Serving's clock is pinned in these tests, so each age is checked exactly
(scrape time minus the status's time), never against the wall clock."""

from __future__ import annotations

import math
import uuid
from types import SimpleNamespace

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from serving import stream_freshness
from serving.app import create_app
from skewless.features import store as feast_store
from skewless.features import stream_status
from skewless.features.definitions import load as load_definitions
from skewless.services.server_process import free_port
from tests.isolation import isolated_settings, with_overrides

STREAM_GAUGES = ("skewless_stream_lag_records", "skewless_stream_last_batch_age_seconds",
                 "skewless_stream_events_applied", "skewless_stream_last_batch")


@pytest.fixture(scope="module")
def applied(services, tmp_path_factory):
    settings = isolated_settings(services, tmp_path_factory.mktemp("stream-metrics"),
                                 feast_project=f"sm{uuid.uuid4().hex[:10]}", serving={"log_predictions": False})
    store = feast_store.feature_store(settings)
    feast_store.apply(settings, load_definitions(settings), store)
    views = sorted(fv.name for fv in store.list_feature_views())
    assert len(views) == 5
    r = redis.Redis.from_url(settings.redis_url)
    key = stream_status.meta_key(settings.feast_project)
    assert not r.exists(key)
    try:
        yield settings, store, views, r, key
    finally:
        r.delete(key)
        r.close()
        store._get_provider().teardown_infra(store.project, tables=store.list_feature_views(),
                                              entities=store.list_entities())


@pytest.fixture
def status(applied):
    """Write a status hash the way ``etl.stream`` does (same field names); delete it after."""
    *_, r, key = applied

    def write(fields: dict) -> None:
        r.delete(key)
        r.hset(key, mapping=fields)

    yield write
    r.delete(key)


T = 1_800_000_000.25  # serving's clock in these tests: the ages are exact, not bounded by a wall clock


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    """Serving's freshness gauges read the time at T."""
    monkeypatch.setattr(stream_freshness, "time", SimpleNamespace(time=lambda: T))


def _scrape(client: TestClient) -> dict:
    """{(name, view or None): value} of the stream's gauges."""
    resp = client.get("/metrics")
    assert resp.status_code == 200, resp.text
    values = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            if s.name.startswith(("skewless_stream_", "skewless_feature_freshness_seconds")):
                values[(s.name, s.labels.get("view"))] = s.value
    return values


def _known(fields: dict, now: float, views: list[str]) -> dict:
    return {"batch": 41, "query_id": "q-7f3", "applied_at": now - 1.5, "events": 123_456, "lag": 17,
            f"newest:{views[0]}": now - 3.25, f"newest:{views[1]}": now - 7200.5, **fields}


def test_the_gauges_are_the_streams_status_aged_at_the_scrape(applied, status):
    settings, store, views, r, key = applied
    fields = _known({}, T, views)
    status(fields)
    # The hash holds exactly what stream_status.decode reads (the job's own reader).
    read = stream_status.read(r, settings.feast_project)
    assert (read.batch, read.events, read.lag, read.query_id) == (41, 123_456, 17, "q-7f3")
    newest = {views[0]: fields[f"newest:{views[0]}"], views[1]: fields[f"newest:{views[1]}"]}
    assert read.newest == newest

    with TestClient(create_app(settings, store)) as c:
        got = _scrape(c)
    for view, t in newest.items():
        assert got[("skewless_feature_freshness_seconds", view)] == T - t
    assert got[("skewless_stream_last_batch_age_seconds", None)] == T - fields["applied_at"]
    assert got[("skewless_stream_lag_records", None)] == 17
    assert got[("skewless_stream_events_applied", None)] == 123_456
    assert got[("skewless_stream_last_batch", None)] == 41
    assert got[("skewless_stream_ran", None)] == 1 and got[("skewless_stream_status_readable", None)] == 1
    # A view the stream applied no event of yet: unknown, not "fresh".
    for view in views[2:]:
        assert math.isnan(got[("skewless_feature_freshness_seconds", view)])


def test_a_stream_that_never_ran_is_nan_and_the_status_is_read_at_each_scrape(applied, status):
    settings, store, views, r, key = applied
    with TestClient(create_app(settings, store)) as c:
        never = _scrape(c)
        assert never[("skewless_stream_ran", None)] == 0 and never[("skewless_stream_status_readable", None)] == 1
        assert all(math.isnan(never[("skewless_feature_freshness_seconds", v)]) for v in views)
        assert all(math.isnan(never[(g, None)]) for g in STREAM_GAUGES)

        # The job starts: the next scrape (no restart, no timer) shows it ...
        fields = _known({"lag": 0}, T, views)
        status(fields)
        running = _scrape(c)
        assert running[("skewless_stream_ran", None)] == 1
        assert running[("skewless_stream_lag_records", None)] == 0  # caught up: 0, not NaN
        t = fields[f"newest:{views[0]}"]
        assert running[("skewless_feature_freshness_seconds", views[0])] == T - t

        # ... and a status lost with the store (flush, restart without persistence) is "never ran" again.
        r.delete(key)
        lost = _scrape(c)
        assert lost[("skewless_stream_ran", None)] == 0
        assert all(math.isnan(lost[("skewless_feature_freshness_seconds", v)]) for v in views)
        assert all(math.isnan(lost[(g, None)]) for g in STREAM_GAUGES)


@pytest.mark.parametrize("broken", ["wrong type", "malformed field"])
def test_a_redis_error_is_a_gauge_and_metrics_still_answers(applied, status, broken):
    settings, store, views, r, key = applied
    fields = _known({}, T, views)
    status(fields)
    with TestClient(create_app(settings, store)) as c:
        good = _scrape(c)
        assert good[("skewless_stream_status_readable", None)] == 1
        if broken == "wrong type":  # HGETALL answers WRONGTYPE
            r.delete(key)
            r.set(key, "not a hash")
        else:
            r.hset(key, "lag", "seventeen")
        bad = _scrape(c)
        assert bad[("skewless_stream_status_readable", None)] == 0
        # The last status read stands, its ages computed now (an upper bound: the stream may have moved on).
        assert bad[("skewless_stream_ran", None)] == 1 and bad[("skewless_stream_lag_records", None)] == 17
        t = fields[f"newest:{views[1]}"]
        assert bad[("skewless_feature_freshness_seconds", views[1])] == T - t

        status(fields)  # repaired: readable again
        again = _scrape(c)
        assert again[("skewless_stream_status_readable", None)] == 1


def test_an_unreachable_redis_leaves_metrics_answering(applied):
    settings, store, views, *_ = applied
    away = with_overrides(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(create_app(away, store)) as c:
        got = _scrape(c)
    assert got[("skewless_stream_status_readable", None)] == 0
    assert math.isnan(got[("skewless_stream_ran", None)])  # never read: whether it ran is unknown
    assert all(math.isnan(got[("skewless_feature_freshness_seconds", v)]) for v in views)
