"""Feast from the DSL: the stock ``feast`` CLI sees exactly the generated objects and can
materialize them; ``skewless features`` materializes into SQLite or Redis, and the
online values are the offline tables' latest rows (the point-in-time value at the
materialization end)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from etl.batch import run_batch
from feature_repo.specs import SERVICES, VIEWS
from skewless.features import store as feast_store
from skewless.features.definitions import load as load_definitions
from skewless.lake_layout import LakeLayout
from skewless.settings import load_settings
from tests.integration.spark_fixtures import REPO, simulated_lake, spark  # noqa: F401

pytestmark = pytest.mark.integration

START = datetime(2026, 7, 1, tzinfo=timezone.utc)
DAYS = 3
END = START + timedelta(days=DAYS)


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):  # noqa: F811
    """A small simulated lake and its offline tables, shared by the module's tests."""
    return simulated_lake(tmp_path_factory.mktemp("feast"), events=3_000, seed=5, start=START, days=DAYS)


def _private(settings, tmp_path: Path, online_store: str):
    return settings.model_copy(update={"state_dir": tmp_path / "state", "online_store": online_store,
                                       "feast_project": f"t{uuid.uuid4().hex[:10]}"})


def latest_rows(settings, view, end: datetime) -> pd.DataFrame:
    """The offline table's latest row per entity at or before ``end``."""
    t = pd.read_parquet(LakeLayout.of(settings).features_dir(view.name))
    t["event_timestamp"] = pd.to_datetime(t["event_timestamp"], utc=True)
    t = t[t.event_timestamp <= pd.Timestamp(end)].sort_values("event_timestamp")
    return t.groupby(view.join_keys).tail(1).reset_index(drop=True)  # (.last() would skip nulls)


def feast_cli(settings, *args: str) -> subprocess.CompletedProcess:
    yaml_path = settings.state_dir / "feast" / "feature_store.yaml"
    env = {**os.environ, "SKEWLESS_LAKE_PATH": settings.lake_path}
    return subprocess.run([sys.executable, "-m", "feast.cli.cli", "-c", str(settings.feature_repo_path),
                           "-f", str(yaml_path), *args], env=env, capture_output=True, text=True, timeout=300)


def _equal(a, b) -> bool:
    if pd.isna(a) or pd.isna(b):
        return pd.isna(a) and pd.isna(b)
    return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a))) if isinstance(a, (int, float)) else a == b


def test_the_stock_feast_cli_applies_exactly_the_dsl_objects_and_materializes_them(lake, tmp_path):
    settings = _private(lake, tmp_path, "sqlite")
    feast_store.write_cli_config(settings)
    applied = feast_cli(settings, "apply")
    assert applied.returncode == 0, applied.stderr[-2000:]
    store = feast_store.feature_store(settings)
    assert {fv.name for fv in store.list_feature_views()} == {v.name for v in VIEWS}
    assert {s.name for s in store.list_feature_services()} == {s.name for s in SERVICES}
    assert {o.name for o in store.list_on_demand_feature_views()} == {t.name for s in SERVICES for t in s.transforms}
    assert set(feast_store.objects(settings, load_definitions(settings))) == (
        {fv.name for fv in store.list_feature_views()} | {s.name for s in store.list_feature_services()}
        | {o.name for o in store.list_on_demand_feature_views()} | {e.name for e in store.list_entities()})
    plan = feast_cli(settings, "plan")
    assert plan.returncode == 0 and "No changes to infrastructure" in plan.stdout, plan.stdout[-2000:]
    mat = feast_cli(settings, "materialize-incremental", END.isoformat())
    assert mat.returncode == 0, mat.stderr[-2000:]
    view = next(v for v in VIEWS if v.name == "user_spend")
    want = latest_rows(settings, view, END).head(20)
    got = feast_store.get_online(settings, load_definitions(settings), {"user_id": want.user_id.iloc[0]})
    for f in view.features:
        assert _equal(want[f].iloc[0], got[f"user_spend__{f}"]), f


@pytest.mark.parametrize("online_store", ["sqlite", "redis"])
def test_online_values_are_the_offline_point_in_time_values(lake, tmp_path, online_store):
    settings = _private(lake, tmp_path, online_store)
    store = feast_store.feature_store(settings)
    summary = feast_store.apply(settings, load_definitions(settings), store)
    assert summary["feast_cli"].startswith("feast -c ")
    try:
        feast_store.materialize(settings, end=END, store=store)
        mismatches, compared = [], 0
        for view in VIEWS:
            want = latest_rows(settings, view, END)
            rows = want.sample(min(15, len(want)), random_state=1)
            for _, r in rows.iterrows():
                got = feast_store.get_online(settings, load_definitions(settings), {k: r[k] for k in view.join_keys}, store=store)
                for f in view.features:
                    compared += 1
                    if not _equal(r[f], got[f"{view.name}__{f}"]):
                        mismatches.append((view.name, f, r[f], got[f"{view.name}__{f}"]))
        assert compared > 100 and not mismatches, mismatches[:10]
        # A later materialization is incremental and keeps the values.
        again = feast_store.materialize(settings, end=END + timedelta(hours=1), store=store)
        assert not again["full"]
    finally:
        store._get_provider().teardown_infra(store.project, tables=store.list_feature_views(),
                                             entities=store.list_entities())


def test_features_cli_get_prints_json(lake, tmp_path):
    settings = _private(lake, tmp_path, "sqlite")
    store = feast_store.feature_store(settings)
    feast_store.apply(settings, load_definitions(settings), store)
    feast_store.materialize(settings, end=END, store=store)
    cfg = tmp_path / "skewless.yaml"
    cfg.write_text(json.dumps({"lake_path": settings.lake_path, "state_dir": str(settings.state_dir),
                               "online_store": "sqlite", "feast_project": settings.feast_project}))
    user = latest_rows(settings, VIEWS[0], END).user_id.iloc[0]
    out = subprocess.run([sys.executable, "-m", "cli", "features", "get", "--entity", f"user_id={user}",
                          "--json", "--config", str(cfg)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    values = json.loads(out.stdout.strip().splitlines()[-1])
    assert values["user_id"] == user and "user_spend__count_1h" in values
    bad = subprocess.run([sys.executable, "-m", "cli", "features", "get", "--entity", "nokey=1",
                          "--config", str(cfg)], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "no feature view is keyed by" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("online_store", ["redis", "sqlite"])
def test_a_late_event_reaches_the_online_store_even_when_it_changes_an_already_loaded_row(
        spark, tmp_path, online_store):  # noqa: F811
    from tests.integration.lake_fixtures import land

    settings = load_settings(REPO / "skewless.yaml").model_copy(update={
        "lake_path": str(tmp_path / "lake"), "state_dir": tmp_path / "state", "online_store": online_store,
        "feast_project": f"t{uuid.uuid4().hex[:10]}"})
    t0 = datetime(2026, 9, 1, 10, 0, tzinfo=timezone.utc)

    def tx(i: int, t: datetime) -> dict:
        return {"transaction_id": f"late-{i}", "user_id": "u1", "merchant_id": "m1", "amount": 10.0 * (i + 1),
                "currency": "EUR", "country": "DE", "channel": "web", "device_id": "d", "event_time": t.isoformat()}

    land(settings, "transactions", [tx(0, t0 + timedelta(seconds=30))], tag="a")
    run_batch(settings, views=VIEWS)
    store = feast_store.feature_store(settings)
    feast_store.apply(settings, load_definitions(settings), store)
    end = t0 + timedelta(hours=2)
    try:
        feast_store.materialize(settings, end=end, store=store)
        before = feast_store.get_online(settings, load_definitions(settings), {"user_id": "u1"}, store=store)
        assert (before["user_spend__count_1h"], before["user_spend__count_24h"]) == (0, 1)  # row at 11:01
        # Late: at 11:00:30 it enters at 11:01 (the very row already loaded) and leaves after `end`.
        land(settings, "transactions", [tx(1, t0 + timedelta(hours=1, seconds=30))], tag="late")
        run_batch(settings, views=VIEWS)
        feast_store.materialize(settings, end=end, store=store)
        after = feast_store.get_online(settings, load_definitions(settings), {"user_id": "u1"}, store=store)
        assert (after["user_spend__count_1h"], after["user_spend__count_24h"]) == (1, 2)
        assert after["user_spend__sum_amount_24h"] == 30.0
        want = latest_rows(settings, VIEWS[0], end)
        assert want.loc[want.user_id == "u1", "count_1h"].item() == 1
    finally:
        store._get_provider().teardown_infra(store.project, tables=store.list_feature_views(),
                                             entities=store.list_entities())
