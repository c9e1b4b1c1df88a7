"""The path from the lake to a model, with the real Spark, Feast (DuckDB offline store,
Redis online store) and MLflow: offline tables -> registry -> online store, online ==
offline, training through the FeatureService, champion registered."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from etl.batch import run_batch
from monitoring.consistency import check, sample_entities
from skewless.features import store as feast_store
from skewless.features.definitions import load as load_definitions
from skewless.lake import read_events
from tests.integration.lake_fixtures import land_simulation
from tests.isolation import isolated_settings

START = datetime(2026, 6, 1, tzinfo=timezone.utc)
DAYS = 30


@pytest.fixture(scope="module")
def world(services, tmp_path_factory):
    """One simulated month in a private lake, Feast project and MLflow store."""
    settings = isolated_settings(services, tmp_path_factory.mktemp("world"), feast_project=f"t{uuid.uuid4().hex[:8]}")
    sim = land_simulation(settings, events=25_000, seed=3, start=START, days=DAYS)
    etl = run_batch(settings, views=load_definitions(settings).views)
    store = feast_store.feature_store(settings)
    feast_store.apply(settings, load_definitions(settings), store)
    end = START + timedelta(days=DAYS)
    feast_store.materialize(settings, end=end, store=store)
    yield settings, store, sim, etl, end
    store._get_provider().teardown_infra(store.project, tables=store.list_feature_views(), entities=store.list_entities())


def test_etl_wrote_every_view(world):
    settings, store, sim, etl, end = world
    from feature_repo.specs import VIEWS

    assert set(etl["views"]) == {v.name for v in VIEWS}
    assert all(v["rows"] > 0 for v in etl["views"].values())
    assert etl["events_read"] == len(sim.transactions)


def test_registry_holds_exactly_the_dsl_objects(world):
    settings, store, *_ = world
    from feature_repo.specs import SERVICES, VIEWS

    assert {fv.name for fv in store.list_feature_views()} == {v.name for v in VIEWS}
    assert {s.name for s in store.list_feature_services()} == {s.name for s in SERVICES}
    fv = store.get_feature_view("user_spend")
    assert [f.name for f in fv.features] == VIEWS[0].features


def test_online_values_equal_offline_point_in_time_values(world):
    settings, store, *_ = world
    report = check(settings, store, sample_entities(settings, 150, seed=1))
    assert report["values_compared"] >= 150 * 20
    assert report["mismatches"] == 0, report["examples"]


KEY = ["user_id", "merchant_id", "event_timestamp", "amount", "event_epoch"]


def _source(store, view: str) -> pd.DataFrame:
    return pd.read_parquet(store.get_feature_view(view).batch_source.path).drop(columns="date", errors="ignore")


def entity_rows(settings, size: int, seed: int) -> pd.DataFrame:
    """Random landed transactions, each at a random time up to an hour after its own."""
    tx = read_events(settings.lake_path, settings.topics.transactions, "event_time",
                     columns=["user_id", "merchant_id", "amount", "event_time"]).to_pandas()
    rng = np.random.default_rng(seed)
    rows = tx.iloc[rng.integers(0, len(tx), size)].reset_index(drop=True)
    rows["event_timestamp"] = rows.pop("event_time") + pd.to_timedelta(rng.integers(0, 3600, size), unit="s")
    return rows


@pytest.fixture(scope="module")
def pit_rows(world):
    """Entity rows for the training-set joins: random times, plus ties (a row's time equal to
    a feature row's time: user_merchant's, user views' and merchant_chargebacks' own rows)
    and rows with no history (unknown entities, a time before the first event)."""
    settings, store, *_ = world
    random = entity_rows(settings, 3000, seed=4)
    chargebacks = _source(store, "merchant_chargebacks").sample(50, random_state=1, replace=True)
    ties = pd.concat([
        _source(store, "user_merchant").sample(300, random_state=1)[["user_id", "merchant_id", "event_timestamp"]],
        chargebacks[["merchant_id", "event_timestamp"]].assign(user_id=random["user_id"].iloc[:50].to_numpy()),
    ])
    ties = ties.assign(amount=12.5)
    unknown = pd.DataFrame({"user_id": ["nobody", random["user_id"].iloc[0], "nobody"],
                            "merchant_id": ["nowhere", random["merchant_id"].iloc[0], random["merchant_id"].iloc[1]],
                            "event_timestamp": [pd.Timestamp(START), pd.Timestamp(START) - pd.Timedelta("1d"),
                                                pd.Timestamp(START) - pd.Timedelta("1d")],
                            "amount": 3.0})
    rows = pd.concat([random, ties, unknown], ignore_index=True)
    rows["event_timestamp"] = pd.to_datetime(rows["event_timestamp"], utc=True).astype("datetime64[ns, UTC]")
    rows["event_epoch"] = (rows["event_timestamp"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return rows[KEY]


def test_asof_training_join_equals_feast_historical_features(world, pit_rows):
    from training.pit_join import historical_features

    settings, store, *_ = world
    rows = pit_rows
    ours = historical_features(store, "fraud_model_v1", rows)
    feast = store.get_historical_features(entity_df=rows, features=store.get_feature_service("fraud_model_v1"),
                                          full_feature_names=True).to_df()
    # Feast's frame also holds what its on-demand view read (the last transaction's absolute
    # time, which the service leaves out); ours holds the service's features, every one Feast's.
    features = [c for c in ours.columns if "__" in c]
    assert set(features) <= set(feast.columns) and len(features) >= 20
    assert "user_diversity__last_tx_time" in feast.columns and "user_diversity__last_tx_time" not in features
    merged = ours.merge(feast, on=KEY, suffixes=("_ours", "_feast"))
    assert len(merged) >= len(rows)
    for f in features:
        a, b = merged[f + "_ours"].astype(float), merged[f + "_feast"].astype(float)
        same = (a.isna() & b.isna()) | np.isclose(a, b, rtol=1e-9, atol=1e-9)
        assert same.all(), (f, merged.loc[~same, KEY + [f + "_ours", f + "_feast"]].head())


def test_spark_training_join_equals_asof_join(world, pit_rows):
    """The Spark engine returns the ASOF join's frame exactly (hence Feast's values, above):
    same rows, columns, dtypes and values, ties included, nulls where there is no history."""
    from training import pit_join, pit_join_spark

    settings, store, *_ = world
    asof = pit_join.historical_features(store, "fraud_model_v1", pit_rows)
    spark = pit_join_spark.historical_features(store, "fraud_model_v1", pit_rows, settings)
    pd.testing.assert_frame_equal(spark, asof, check_exact=True)
    # A tie sees the feature row at its own time (at or before, not strictly before).
    um = _source(store, "user_merchant")
    um["event_timestamp"] = pd.to_datetime(um["event_timestamp"], utc=True).astype("datetime64[ns, UTC]")
    tied = spark.merge(um, on=["user_id", "merchant_id", "event_timestamp"])
    assert len(tied) >= 300 and (tied["user_merchant__tx_count_30d"] == tied["tx_count_30d"]).all()
    # No history: every view's features are null.
    views = [c for c in spark.columns if "__" in c and not c.startswith("request_features__")]
    assert spark.tail(3)[views].isna().all().all()


def test_a_leaky_feature_is_detected(world):
    """A feature that counts the row's own transaction (window [t-w, t]) disagrees with the
    independent recomputation from raw events strictly before t: the leak check catches it."""
    from feature_repo.specs import user_spend
    from tests.integration.leakage import leaky_rows, strict_counts

    settings, store, sim, *_ = world
    rows = pd.DataFrame(sim.transactions[:4000])
    rows["event_timestamp"] = pd.to_datetime(rows["event_time"], utc=True)
    honest = strict_counts(sim.transactions, rows, "1h", user_spend.hop_td)
    from training.pit_join import historical_features

    rows["event_epoch"] = (rows["event_timestamp"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    served = historical_features(store, "fraud_model_v1", rows[["user_id", "merchant_id", "amount", "event_timestamp", "event_epoch"]])
    # What the platform serves equals the honest recomputation, row by row...
    assert (served["user_spend__count_1h"].fillna(0).to_numpy() == honest).all()
    # ...and a leaky definition cannot pass the same check: it sees the row's own transaction.
    leaky = leaky_rows(sim.transactions, rows, "1h", user_spend.hop_td)
    assert (leaky != honest).all()


def test_online_lookup_of_unknown_entity_is_null_not_an_error(world):
    settings, store, *_ = world
    values = feast_store.get_online(settings, load_definitions(settings), {"user_id": "nobody"}, store=store)
    assert values["user_spend__count_1h"] is None


def test_training_through_the_feature_service(world):
    from training.trainer import train

    settings, store, sim, etl, end = world
    summary = train(settings, store, end=end, promote_champion=True)
    res = summary["results"]
    mature = pd.Timestamp(end - timedelta(days=settings.training.label_maturity_days))
    assert summary["rows"] == sum(pd.Timestamp(t["event_time"]) <= mature for t in sim.transactions)
    print({name: {k: r[k] for k in ("val_pr_auc", "pr_auc", "roc_auc", "cost", "savings")} for name, r in res.items()})
    assert summary["promoted"] and summary["registered_version"] == "1"
    # Windowed features carry the signal: the model with them beats request-only features.
    assert res["hgb"]["pr_auc"] > res["hgb_no_windows"]["pr_auc"] + 0.1
    assert res["hgb"]["pr_auc"] < 0.999  # a perfect score here would be a leak to hunt
    from skewless.registry import load_champion

    # Chosen on validation (the test figures above only report): the best validation PR-AUC, recorded as such.
    assert summary["selected_on"] == "validation"
    assert summary["chosen"] == max(("hgb", "logreg"), key=lambda n: res[n]["val_pr_auc"])
    from mlflow.tracking import MlflowClient

    run = MlflowClient(settings.mlflow_tracking_uri()).get_run(summary["run_id"])
    assert run.data.params["selected_on"] == "validation" and run.data.params["chosen_model"] == summary["chosen"]
    champion = load_champion(settings)
    assert champion.feature_service == "fraud_model_v1" and champion.candidate == summary["chosen"]
    assert champion.features == summary["features"]
    assert champion.threshold == res[summary["chosen"]]["threshold"]
    assert 0.0 <= champion.threshold <= 1.0 or champion.threshold == float("inf")
    # The drift reference is saved with the run: histograms of the champion's features and score.
    from monitoring.live_drift import load_reference, reference_run

    hists, meta = load_reference(settings, reference_run(settings))
    assert set(hists) == set(champion.features) | {"score"}
    assert meta["model_version"] == champion.version and meta["rows"] == summary["rows"]
    assert all(h.n == summary["rows"] for name, h in hists.items() if name != "score")


def test_labels_arriving_after_the_cutoff_are_not_known(world):
    from training.labels import label_frame

    settings, store, sim, etl, end = world
    cutoff = START + timedelta(days=15)
    rows = label_frame(settings, None, cutoff, cutoff)
    known = {lb["transaction_id"] for lb in sim.labels
             if lb["is_fraud"] and pd.Timestamp(lb["label_time"]) <= pd.Timestamp(cutoff)}
    later = {lb["transaction_id"] for lb in sim.labels
             if lb["is_fraud"] and pd.Timestamp(lb["label_time"]) > pd.Timestamp(cutoff)}
    labelled = set(rows.loc[rows.label == 1, "transaction_id"])
    assert labelled == known & set(rows.transaction_id)
    assert later & set(rows.transaction_id), "some frauds of the window are only labelled later"
    assert not (labelled & later)


def test_train_cli_selects_the_spark_engine_from_settings(world, settings_file, monkeypatch):
    """``skewless train`` with ``training.pit_engine: spark`` (an environment override) builds
    its training set on Spark. A ten-day window, a separate model name and small boosters
    keep it quick; what is checked is the engine, in the summary and the MLflow run."""
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from cli.train import app
    from training import models

    settings, store, sim, etl, end = world
    booster = models.booster
    monkeypatch.setattr(models, "booster",
                        lambda seed: booster(seed).set_params(histgradientboostingclassifier__max_iter=20))
    args = ["--config", str(settings_file(settings)), "--start", (START + timedelta(days=5)).isoformat(),
            "--end", (START + timedelta(days=15)).isoformat(), "--cutoff", end.isoformat(), "--json"]
    env = {"SKEWLESS_TRAINING__PIT_ENGINE": "spark", "SKEWLESS_TRAINING__MODEL_NAME": "spark-engine-check"}
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["pit_engine"] == "spark" and summary["model"] == "spark-engine-check"
    assert summary["rows"] > 5000
    assert MlflowClient(settings.mlflow_tracking_uri()).get_run(summary["run_id"]).data.params["pit_engine"] == "spark"
