"""Materializing in time slices (bounded memory) leaves exactly what one pass leaves: real
Feast, real Redis, a small simulated lake. The whole online store of each project is read
back (every entity key, every field, the rows' timestamps) and compared both ways; a load
of the same slices in the wrong order is shown to differ, so the comparison can fail."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
import redis

from etl.batch import run_batch
from feature_repo.specs import VIEWS
from skewless.features import store as feast_store
from skewless.features.definitions import load as load_definitions
from skewless.settings import load_settings
from tests.integration.lake_fixtures import land_simulation
from tests.integration.spark_fixtures import REPO, spark  # noqa: F401

pytestmark = pytest.mark.integration

START = datetime(2026, 7, 1, tzinfo=timezone.utc)
DAYS = 3
END = START + timedelta(days=DAYS)
ONE_PASS = 10**9  # slice rows: every view in one slice, i.e. one Feast materialize per view
SMALL = 1000  # the smallest slice the setting allows: several slices per view here


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("slices")
    settings = load_settings(REPO / "skewless.yaml").model_copy(
        update={"lake_path": str(tmp / "lake"), "state_dir": tmp / "state"})
    land_simulation(settings, events=3_000, seed=11, start=START, days=DAYS)
    run_batch(settings, views=VIEWS)
    return settings


@pytest.fixture
def projects(lake, tmp_path):
    """A maker of private Feast projects (own registry, own Redis keys), torn down after."""
    made = []

    def make(slice_rows: int):
        project = f"t{uuid.uuid4().hex[:10]}"
        settings = lake.model_copy(update={
            "state_dir": tmp_path / project, "online_store": "redis", "feast_project": project,
            "materialize": lake.materialize.model_copy(update={"slice_rows": slice_rows})})
        store = feast_store.feature_store(settings)
        feast_store.apply(settings, load_definitions(settings), store)
        made.append(store)
        return settings, store

    yield make
    for store in made:
        store._get_provider().teardown_infra(store.project, tables=store.list_feature_views(),
                                             entities=store.list_entities())


def online_dump(settings) -> dict[bytes, dict[bytes, bytes]]:
    """Every entity key of the project in Redis (the project's name cut off) -> its hash."""
    client = redis.Redis.from_url(settings.redis_url)
    suffix = settings.feast_project.encode()
    out = {}
    for key in client.scan_iter(match=b"*" + suffix, count=2000):
        if key.startswith(b"skewless:"):  # the watermark, not a feature row
            continue
        out[key[:-len(suffix)]] = client.hgetall(key)
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a, "nothing was materialized"
    assert set(a) - set(b) == set() and set(b) - set(a) == set(), "different entity keys"
    differ = [k for k in a if a[k] != b[k]]
    assert not differ, f"{len(differ)} of {len(a)} entity keys hold different values"


def test_a_sliced_full_load_leaves_what_one_pass_leaves(projects):
    one, one_store = projects(ONE_PASS)
    sliced, sliced_store = projects(SMALL)
    a = feast_store.materialize(one, end=END, store=one_store, full=True)
    seen = []
    b = feast_store.materialize(sliced, end=END, store=sliced_store, full=True,
                                on_progress=lambda done, total: seen.append((done, total)))
    assert set(a["slices"].values()) == {1}
    # Every view with more than a few slices' rows really was cut (the labels' view is small).
    assert all(n >= 3 for name, n in b["slices"].items() if b["rows"][name] > 3 * SMALL), b
    assert sum(b["slices"].values()) >= 20, b["slices"]
    assert a["rows"] == b["rows"] and sum(b["rows"].values()) > 10 * SMALL
    assert seen[-1][0] == seen[-1][1] == sum(b["rows"].values())  # the progress ends at the total
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert a["keys"] == b["keys"]
    assert_same(online_dump(one), online_dump(sliced))


def test_a_sliced_incremental_load_on_top_of_an_earlier_one_leaves_what_one_pass_leaves(projects):
    one, one_store = projects(ONE_PASS)
    sliced, sliced_store = projects(SMALL)
    feast_store.materialize(one, end=END, store=one_store, full=True)
    feast_store.materialize(sliced, end=END - timedelta(days=1), store=sliced_store, full=True)
    later = feast_store.materialize(sliced, end=END, store=sliced_store)
    assert not later["full"] and max(later["slices"].values()) > 1
    assert_same(online_dump(one), online_dump(sliced))


def test_the_comparison_catches_slices_loaded_out_of_order(projects):
    """The same slices newest first (each entity then keeps an older row): the dumps differ."""
    from skewless.features import slices

    one, one_store = projects(ONE_PASS)
    wrong, wrong_store = projects(SMALL)
    feast_store.materialize(one, end=END, store=one_store, full=True)
    feast_store.materialize(wrong, end=START, store=wrong_store, full=True)  # creates the tables, loads ~nothing
    wrong_store.config.online_store.skip_dedup = True  # as materialize does: every write replaces
    cuts = 0
    for view in wrong_store.list_feature_views():
        src = view.batch_source
        plan = slices.plan(slices.hourly_counts(src.path, src.timestamp_field, START, END), START, END, SMALL)
        cuts += len(plan) - 1
        for sl in reversed(plan):
            wrong_store.materialize(start_date=sl.start, end_date=sl.end, feature_views=[view.name])
    assert cuts >= 10
    a, b = online_dump(one), online_dump(wrong)
    assert set(a) == set(b)  # the same entities ...
    with pytest.raises(AssertionError, match="hold different values"):  # ... some with older values
        assert_same(a, b)
