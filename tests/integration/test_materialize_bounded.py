"""Materializing in bounded memory (each view's latest rows found by DuckDB, written a
slice of entity keys at a time) leaves exactly what Feast's own one-pass materialization
leaves: real Feast, real Redis, a small simulated lake. The whole online store of each
project is read back (every entity key, every field, the rows' timestamps) and compared
both ways; a load missing one slice is shown to differ, so the comparison can fail."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
import redis

from skewless.features import store as feast_store
from skewless.features.definitions import load as load_definitions
from tests.integration.spark_fixtures import simulated_lake, spark  # noqa: F401

pytestmark = pytest.mark.integration

START = datetime(2026, 7, 1, tzinfo=timezone.utc)
DAYS = 3
END = START + timedelta(days=DAYS)
SMALL = 100  # entities per slice: the smallest the setting allows, several slices per view here


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):  # noqa: F811
    return simulated_lake(tmp_path_factory.mktemp("slices"), events=3_000, seed=11, start=START, days=DAYS)


@pytest.fixture
def projects(lake, tmp_path):
    """A maker of private Feast projects (own registry, own Redis keys), torn down after."""
    made = []

    def make():
        project = f"t{uuid.uuid4().hex[:10]}"
        settings = lake.model_copy(update={
            "state_dir": tmp_path / project, "online_store": "redis", "feast_project": project,
            "materialize": lake.materialize.model_copy(update={"batch_rows": SMALL, "duckdb_memory": "64MB"})})
        store = feast_store.feature_store(settings)
        feast_store.apply(settings, load_definitions(settings), store)
        made.append(store)
        return settings, store

    yield make
    for store in made:
        store._get_provider().teardown_infra(store.project, tables=store.list_feature_views(),
                                             entities=store.list_entities())


def feast_one_pass(store, end: datetime) -> None:
    """Feast's own engine over everything up to ``end``, unconditional writes: the reference."""
    store.config.online_store.skip_dedup = True
    store.materialize(start_date=feast_store.EPOCH, end_date=end)


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


def test_a_bounded_full_load_leaves_what_feasts_one_pass_leaves(projects):
    ref, ref_store = projects()
    ours, our_store = projects()
    feast_one_pass(ref_store, END)
    seen = []
    summary = feast_store.materialize(ours, end=END, store=our_store, full=True,
                                      on_progress=lambda done, total: seen.append((done, total)))
    total = sum(summary["keys"].values())
    assert total > 5 * SMALL and seen[-1] == (total, total)  # the progress ends at every entity
    assert len(seen) > total // SMALL and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert sum(summary["rows"].values()) > total  # offline rows: several per entity
    assert summary["keys"] == feast_store.online_key_counts(ref, ref_store)
    assert_same(online_dump(ref), online_dump(ours))
    assert_same(online_dump(ours), online_dump(ref))
    # Recorded in the registry as Feast records it: a later run is incremental.
    assert not feast_store.materialize(ours, end=END + timedelta(hours=1), store=our_store)["full"]


def test_an_incremental_load_on_top_of_an_earlier_one_leaves_what_one_pass_leaves(projects):
    ref, ref_store = projects()
    ours, our_store = projects()
    feast_one_pass(ref_store, END)
    feast_store.materialize(ours, end=END - timedelta(days=1), store=our_store, full=True)
    later = feast_store.materialize(ours, end=END, store=our_store)
    assert not later["full"] and sum(later["keys"].values()) > 0
    assert_same(online_dump(ref), online_dump(ours))


def test_the_comparison_catches_a_load_missing_one_slice(projects):
    from feast.utils import _convert_arrow_to_proto

    from skewless.features.latest_rows import LatestRows

    ref, ref_store = projects()
    wrong, wrong_store = projects()
    feast_one_pass(ref_store, END)
    wrong_store.config.online_store.skip_dedup = True
    online = wrong_store._get_provider().online_store
    skipped = 0
    with LatestRows(wrong.state_dir / "tmp", "64MB") as latest:
        for view in wrong_store.list_feature_views():
            load = latest.prepare(view, feast_store.EPOCH, END)
            join_keys = {e.name: e.dtype.to_value_type() for e in view.entity_columns}
            for i, batch in enumerate(latest.con.sql(f"SELECT * FROM {load.table}").to_arrow_reader(SMALL)):
                if i == 1 and not skipped:  # one slice of one view left out
                    skipped = batch.num_rows
                    continue
                online.online_write_batch(wrong_store.config, view, _convert_arrow_to_proto(batch, view, join_keys),
                                          None)
    assert skipped
    a, b = online_dump(ref), online_dump(wrong)
    assert len(a) - len(b) == skipped
    with pytest.raises(AssertionError, match="different entity keys"):
        assert_same(a, b)
