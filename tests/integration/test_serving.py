"""The online API against real Redis, Kafka, Feast and MLflow: one simulated month is
landed, computed by Spark, materialized, and a champion trained and promoted once for
the module; each test then talks to the app over HTTP (in-process, or a real server)."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings as hsettings
from pydantic import SecretStr

from etl.batch import run_batch
from serving.app import create_app
from serving.champion import ChampionWatcher
from serving.online_reader import NOT_FOUND, PRESENT, FeaturePlan
from skewless.features import store as feast_store
from skewless.features.definitions import load as load_definitions
from skewless.features import watermark
from skewless.services.server_process import ServerProcess, free_port
from tests.integration.lake_fixtures import land_simulation
from tests.isolation import isolated_settings, with_overrides

START = datetime(2026, 3, 1, tzinfo=timezone.utc)
DAYS = 30
END = START + timedelta(days=DAYS)
SERVICE = "fraud_model_v1"


@pytest.fixture(scope="module")
def served(services, tmp_path_factory):
    settings = isolated_settings(services, tmp_path_factory.mktemp("served"), feast_project=f"s{uuid.uuid4().hex[:8]}",
                                 serving={"log_predictions": False, "reload_interval_s": 0.2})
    sim = land_simulation(settings, events=20_000, seed=11, start=START, days=DAYS)
    run_batch(settings, views=load_definitions(settings).views)
    store = feast_store.feature_store(settings)
    feast_store.apply(settings, load_definitions(settings), store)
    feast_store.materialize(settings, end=END, store=store)
    from training.trainer import train

    summary = train(settings, store, end=END, promote_champion=True)
    yield settings, store, sim, summary
    store._get_provider().teardown_infra(store.project, tables=store.list_feature_views(), entities=store.list_entities())


@pytest.fixture(scope="module")
def client(served):
    settings, store, *_ = served
    with TestClient(create_app(settings, store)) as c:
        yield c


def _tx(user_id: str, merchant_id: str, amount: float, at: datetime = END, **extra) -> dict:
    return {"transaction_id": f"t-{uuid.uuid4().hex[:8]}", "user_id": user_id, "merchant_id": merchant_id,
            "amount": amount, "currency": "EUR", "country": "DE", "channel": "web", "device_id": "d-1",
            "event_time": at.isoformat().replace("+00:00", "Z"), **extra}


def _pairs(sim, n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(sim.transactions), n, replace=False)
    return [{"user_id": sim.transactions[i]["user_id"], "merchant_id": sim.transactions[i]["merchant_id"],
             "amount": float(sim.transactions[i]["amount"])} for i in picks]


def _same(a, b) -> bool:
    a_null, b_null = a is None or pd.isna(a), b is None or pd.isna(b)
    if a_null or b_null:
        return a_null and b_null
    return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-12)


# -- the read path --------------------------------------------------------------------

def test_fast_read_path_returns_exactly_what_feast_get_online_features_returns(served):
    import redis

    settings, store, sim, _ = served
    rows = [{**p, "event_epoch": END.timestamp()} for p in _pairs(sim, 150)]
    rows += [{"user_id": "nobody", "merchant_id": "nowhere", "amount": 3.0, "event_epoch": END.timestamp()}]
    plan = FeaturePlan.for_service(store, SERVICE)
    client = redis.Redis.from_url(settings.redis_url)
    pipe = client.pipeline(transaction=False)
    for key, fields in plan.commands(rows):
        pipe.hmget(key, fields)
    ours = plan.decode(rows, pipe.execute())
    feast = store.get_online_features(features=store.get_feature_service(SERVICE), entity_rows=rows,
                                      full_feature_names=True).to_dict()
    assert set(ours.names) == {k for k in feast if "__" in k}
    compared = 0
    for i in range(len(rows)):
        for j, name in enumerate(ours.names):
            assert _same(ours.values[i][j], feast[name][i]), (name, rows[i], ours.values[i][j], feast[name][i])
            compared += 1
    assert compared == len(rows) * 24  # 20 view features (the last tx time is a transform input only) + 4 request-time
    present = sum(s == PRESENT for s in ours.statuses[0])
    assert present >= 15  # a real entity has real values
    unknown = ours.row_dict(len(rows) - 1)
    view_cols = [j for j, n in enumerate(ours.names) if not n.startswith("request_features__")]
    assert all(ours.statuses[-1][j] == NOT_FOUND for j in view_cols)
    assert unknown["user_spend__count_1h"] is None


# -- /v1/predict ------------------------------------------------------------------------

def test_predict_uses_the_same_vector_and_score_as_the_offline_training_path(served, client):
    from training.pit_join import historical_features

    settings, store, sim, summary = served
    pairs = _pairs(sim, 25, seed=1)
    champion = client.get("/readyz").json()["model"]
    assert champion["feature_service"] == SERVICE
    offline_rows = pd.DataFrame([{**p, "event_timestamp": END, "event_epoch": END.timestamp()} for p in pairs])
    offline = historical_features(store, SERVICE, offline_rows)
    from skewless.registry import load_champion

    art = load_champion(settings)
    X = offline[art.features].astype("float64").to_numpy()
    offline_scores = art.pipeline.predict_proba(X)[:, 1]
    # The served model is compiled (not scikit-learn's fallback) and scores as scikit-learn does.
    assert champion["scorer"].startswith("numpy "), champion
    from serving.scorer import build_scorer

    compiled = build_scorer(art.pipeline)
    np.testing.assert_allclose(compiled(X), offline_scores, rtol=1e-9, atol=1e-9)
    for i in range(len(X)):
        np.testing.assert_allclose(compiled(X[i:i + 1]), art.pipeline.predict_proba(X[i:i + 1])[:, 1],
                                   rtol=1e-9, atol=1e-9)
    reviewed = 0
    for i, p in enumerate(pairs):
        r = client.post("/v1/predict", params={"include_features": "true"}, json=_tx(**p))
        assert r.status_code == 200, r.text
        body = r.json()
        assert list(body["features"]) == art.features  # the model's features, in the model's order
        for name in art.features:
            assert _same(body["features"][name], offline[name].iloc[i]), (name, p)
        assert body["score"] == pytest.approx(offline_scores[i], abs=1e-12)
        assert body["review"] == (body["score"] >= art.threshold)
        assert body["model_version"] == art.version and body["feature_service"] == SERVICE
        reviewed += body["review"]
    assert 0 <= reviewed < len(pairs)


def test_unknown_entities_get_defaults_and_not_found_never_a_500(client):
    r = client.post("/v1/predict", json=_tx("never-seen-user", "never-seen-merchant", 12.0))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["not_found"] == sorted(["user_spend", "user_diversity", "user_merchant", "merchant_activity",
                                        "merchant_chargebacks"])
    assert 0.0 <= body["score"] <= 1.0


@pytest.mark.parametrize("field, value", [
    ("amount", "12"), ("amount", -5), ("amount", None), ("currency", "euro"), ("country", "DEU"),
    ("user_id", 42), ("user_id", ""), ("event_time", "2026-03-01T00:00:00"), ("event_time", 1767225600),
    ("event_time", "not a time"), ("mcc", 5411), ("surprise", "field"),
])
def test_bad_transactions_are_422_naming_the_field(client, field, value):
    tx = _tx("u1", "m1", 10.0)
    if value is None:
        tx.pop(field)
    else:
        tx[field] = value
    r = client.post("/v1/predict", json=tx)
    assert r.status_code == 422, r.text
    assert any(field in map(str, err["loc"]) for err in r.json()["detail"]), r.json()


def test_not_json_is_422(client):
    r = client.post("/v1/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


# -- /v1/features -----------------------------------------------------------------------

def test_features_for_many_entities_with_statuses_and_timestamps(served, client):
    settings, store, sim, _ = served
    entities = [{**p, "event_epoch": END.timestamp()} for p in _pairs(sim, 99, seed=2)]
    entities.append({"user_id": "nobody", "merchant_id": "nowhere", "amount": 1.0, "event_epoch": END.timestamp()})
    r = client.post("/v1/features", json={"feature_service": SERVICE, "entities": entities})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["features"]) == 24 and len(body["results"]) == 100
    first, last = body["results"][0], body["results"][-1]
    i = body["features"].index("user_spend__count_7d")
    assert first["statuses"][i] == "PRESENT" and first["event_timestamps"][i] <= END.timestamp()
    assert last["statuses"][i] == "NOT_FOUND" and last["values"][i] is None and last["event_timestamps"][i] is None


def test_features_by_reference(served, client):
    settings, store, sim, _ = served
    p = _pairs(sim, 1, seed=3)[0]
    r = client.post("/v1/features", json={"features": ["merchant_activity:count_24h", "user_spend:sum_amount_7d"],
                                         "entities": [{"user_id": p["user_id"], "merchant_id": p["merchant_id"]}]})
    assert r.status_code == 200, r.text
    assert r.json()["features"] == ["merchant_activity__count_24h", "user_spend__sum_amount_7d"]


@pytest.mark.parametrize("body, status, needle", [
    ({"features": ["user_spend:count_1h"], "entities": [{"user_id": "u"}] * 1001}, 413, "1001"),
    ({"feature_service": "no_such_service", "entities": [{"user_id": "u"}]}, 422, "no_such_service"),
    ({"features": ["user_spend:no_such_feature"], "entities": [{"user_id": "u"}]}, 422, "no_such_feature"),
    ({"features": ["no_such_view:x"], "entities": [{"user_id": "u"}]}, 422, "no_such_view"),
    ({"features": ["justaname"], "entities": [{"user_id": "u"}]}, 422, "view:feature"),
    ({"features": ["user_spend:count_1h"], "entities": [{"merchant_id": "m"}]}, 422, "user_id"),
    ({"features": ["user_spend:count_1h"], "entities": [{"user_id": 7}]}, 422, "user_id"),
    ({"feature_service": SERVICE, "entities": [{"user_id": "u", "merchant_id": "m", "event_epoch": 1.0}]}, 422,
     "amount"),
    ({"feature_service": SERVICE, "features": ["user_spend:count_1h"], "entities": []}, 422, "exactly one"),
    ({"entities": []}, 422, "exactly one"),
])
def test_bad_feature_requests_are_4xx_with_a_message(client, body, status, needle):
    r = client.post("/v1/features", json=body)
    assert r.status_code == status, r.text
    assert needle in r.text


# -- operations ---------------------------------------------------------------------------

def test_health_readiness_and_metrics(served, client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert client.post("/v1/predict", json=_tx(**_pairs(served[2], 1, seed=5)[0])).status_code == 200
    text = client.get("/metrics").text
    assert 'skewless_http_requests_total{method="POST",route="/v1/predict",status="200"}' in text
    assert "skewless_http_request_seconds_bucket" in text and "skewless_online_store_seconds_count" in text
    assert "skewless_feature_staleness_seconds_bucket" in text
    version = ready.json()["model"]["version"]
    assert f'skewless_model_info{{model="skewless-fraud",version="{version}"}} 1.0' in text
    assert "/openapi.json" in client.get("/docs").text


def test_without_a_champion_predict_is_503_with_the_fix_and_features_still_work(served, tmp_path):
    settings, store, sim, _ = served
    empty = with_overrides(settings, state_dir=str(tmp_path / "no-models"), training={"model_name": "never-trained"})
    with TestClient(create_app(empty, store)) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503 and "has no champion" in ready.json()["problems"][0]
        r = c.post("/v1/predict", json=_tx("u1", "m1", 5.0))
        assert r.status_code == 503 and "skewless train --promote" in r.json()["detail"]
        body = {"features": ["user_spend:count_1h"], "entities": [{"user_id": _pairs(sim, 1)[0]["user_id"]}]}
        assert c.post("/v1/features", json=body).status_code == 200


def test_api_key_guards_every_route_and_is_never_logged(served, caplog):
    settings, store, *_ = served
    key = "k-" + uuid.uuid4().hex
    guarded = with_overrides(settings, serving={"api_key": SecretStr(key)})
    caplog.set_level("DEBUG")
    with TestClient(create_app(guarded, store)) as c:
        tx = _tx("u1", "m1", 10.0)
        for path, kwargs in [("/v1/predict", {"json": tx}), ("/v1/features", {"json": {"entities": []}})]:
            for headers in ({}, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"}):
                r = c.post(path, headers=headers, **kwargs)
                assert r.status_code == 401 and r.json() == {"detail": "missing or wrong API key"}
        assert c.get("/metrics").status_code == 401 and c.get("/readyz").status_code == 401
        assert c.get("/no/such/route").status_code == 401  # not even whether a route exists
        assert c.get("/healthz").status_code == 200
        assert c.post("/v1/predict", json=tx, headers={"x-api-key": key}).status_code == 200
        assert c.post("/v1/predict", json=tx, headers={"authorization": f"Bearer {key}"}).status_code == 200
    assert key not in caplog.text
    assert key not in str(guarded.public_dict())


def _redis_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    for _ in range(100):
        try:
            redis.Redis(port=port, socket_timeout=0.2).ping()
            return proc
        except redis.RedisError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


@pytest.mark.timeout(120)
def test_online_store_down_is_a_quick_503_and_the_service_recovers_by_itself(served):
    settings, store, sim, _ = served
    port = free_port()
    proc = _redis_server(port)
    private = with_overrides(settings, redis_url=f"redis://127.0.0.1:{port}/0", serving={"redis_timeout_s": 0.2})
    body = {"feature_service": SERVICE, "entities": [{**_pairs(sim, 1)[0], "event_epoch": END.timestamp()}]}
    try:
        with TestClient(create_app(private, store)) as c:
            assert c.post("/v1/features", json=body).status_code == 200
            proc.terminate()
            proc.wait(10)
            for _ in range(3):  # an answer, not a hang (the test's timeout would catch one)
                r = c.post("/v1/features", json=body)
                assert r.status_code == 503 and "online store unavailable" in r.json()["detail"]
            assert c.post("/v1/predict", json=_tx("u1", "m1", 5.0)).status_code == 503
            assert c.get("/readyz").status_code == 503
            proc = _redis_server(port)
            # This store is empty, so /readyz would rightly say "not loaded" (see
            # test_online_store_recovery.py); here it is about reconnecting: mark it loaded.
            watermark.write(private, watermark.read(settings))
            # The very next request reconnects: no restart, no waiting period.
            assert c.post("/v1/features", json=body).status_code == 200
            assert c.get("/readyz").status_code == 200
            assert c.post("/v1/predict", json=_tx("u1", "m1", 5.0)).status_code == 200
    finally:
        proc.terminate()


def test_prediction_log_lands_in_the_lake_like_any_topic(served):
    from ingestion.consumer import consume
    from skewless.lake import read_events

    settings, store, sim, _ = served
    logged = with_overrides(settings, serving={"log_predictions": True})
    sent = {}
    with TestClient(create_app(logged, store)) as c:
        for p in _pairs(sim, 20, seed=4):
            rid = uuid.uuid4().hex
            r = c.post("/v1/predict", params={"include_features": "true"}, json=_tx(**p),
                       headers={"x-request-id": rid})
            assert r.status_code == 200
            sent[rid] = r.json()
    # Leaving the client flushed the log. The ingestion consumer lands it like any topic.
    consume(logged, until_idle=3.0, topics=[logged.topics.predictions])
    rows = read_events(logged.lake_path, logged.topics.predictions, "predicted_at").to_pandas()
    assert set(rows["request_id"]) == set(sent)
    for _, row in rows.iterrows():
        answer = sent[row["request_id"]]
        assert row["score"] == answer["score"] and row["model_version"] == answer["model_version"]
        assert orjson.loads(row["features"]) == answer["features"]


def _check_served(settings_file, settings, *args) -> tuple[int, dict]:
    r = subprocess.run([sys.executable, "-m", "cli", "check", "consistency", "--served", "--json",
                        "--config", str(settings_file(settings)), *args], capture_output=True, text=True, timeout=300)
    assert r.stdout.strip(), r.stderr
    return r.returncode, orjson.loads(r.stdout.strip().splitlines()[-1])


def test_consistency_as_served_counts_what_the_logged_predictions_were_scored_with(served, settings_file):
    """serve -> predictions topic -> ingest consume -> ``check consistency --served``.

    The online store holds the values materialized up to END (batch only). Scored at END,
    every served value equals the offline point-in-time value; scored as of three days
    earlier, the served (END's) values of the windowed features are stale, and the check
    counts exactly the differences an independent point-in-time join (Feast's registry,
    DuckDB) finds between the vectors the API returned and the offline values."""
    from ingestion.consumer import consume
    from skewless.registry import load_champion
    from training.pit_join import historical_features

    settings, store, sim, _ = served
    logged = with_overrides(settings, serving={"log_predictions": True},
                            topics={"predictions": f"pr-served-{uuid.uuid4().hex[:8]}"})
    art = load_champion(settings)

    def predict(pairs: list[dict], at: datetime) -> dict[str, dict]:
        answers = {}
        with TestClient(create_app(logged, store)) as c:
            for p in pairs:
                rid = uuid.uuid4().hex
                r = c.post("/v1/predict", params={"include_features": "true"}, json=_tx(**p, at=at),
                           headers={"x-request-id": rid})
                assert r.status_code == 200, r.text
                answers[rid] = r.json()["features"]
        consume(logged, until_idle=3.0, topics=[logged.topics.predictions])  # leaving the client flushed the log
        return answers

    # 1. At the materialized time: zero differences.
    fresh = predict(_pairs(sim, 30, seed=21) + [{"user_id": "nobody", "merchant_id": "nowhere", "amount": 9.0}], END)
    code, report = _check_served(settings_file, logged)
    assert code == 0, report
    assert (report["predictions"], report["compared_predictions"], report["not_yet_covered"]) == (31, 31, 0)
    assert set(report["features"]) == set(art.features) and report["unknown_features"] == []
    t = report["totals"]
    assert (t["compared"], t["matches"], t["mismatches"], t["missing"], t["extra"]) == (31 * len(art.features),) * 2 + (0, 0, 0)

    # 2. Three days earlier, scored with END's values: stale, and counted exactly.
    since = datetime.now(timezone.utc)
    then = END - timedelta(days=3)
    pairs = _pairs(sim, 40, seed=22)
    stale = predict(pairs, then)
    code, report = _check_served(settings_file, logged, "--since", since.isoformat())
    assert report["predictions"] == report["compared_predictions"] == 40 and report["not_yet_covered"] == 0
    rows = pd.DataFrame([{**p, "event_timestamp": then, "event_epoch": then.timestamp()} for p in pairs])
    offline = historical_features(store, SERVICE, rows)
    expected = {f: {"matches": 0, "mismatches": 0, "missing": 0, "extra": 0} for f in art.features}
    for i, features in enumerate(stale.values()):  # answers in the order the pairs were sent
        for f in art.features:
            s, o = features[f], offline[f].iloc[i]
            o = None if pd.isna(o) else float(o)
            kind = ("matches" if (s is None and o is None) or (s is not None and o is not None and math.isclose(
                s, o, rel_tol=1e-9, abs_tol=1e-9)) else "missing" if s is None else "extra" if o is None else "mismatches")
            expected[f][kind] += 1
    got = {f: {k: c[k] for k in ("matches", "mismatches", "missing", "extra")} for f, c in report["features"].items()}
    assert got == expected
    for c in report["features"].values():
        assert c["compared"] == c["matches"] + c["mismatches"] + c["missing"] + c["extra"] == 40
    t = report["totals"]
    assert t["mismatches"] > 0 and code == 1  # velocity features changed in those three days
    assert t["compared"] == t["matches"] + t["mismatches"] + t["missing"] + t["extra"] == 40 * len(art.features)
    assert report["examples"] and all(e["request_id"] in stale for e in report["examples"])
    assert not set(stale) & set(fresh)


def test_logging_never_blocks_or_fails_a_prediction_when_kafka_is_away(served):
    settings, store, *_ = served
    away = with_overrides(settings, kafka={"bootstrap_servers": [f"127.0.0.1:{free_port()}"]},
                 serving={"log_predictions": True})
    app = create_app(away, store)
    with TestClient(app) as c:
        for i in range(30):
            assert c.post("/v1/predict", json=_tx("u1", "m1", 5.0 + i)).status_code == 200
        assert "skewless_prediction_log_spill_records" in c.get("/metrics").text
    # Nothing sent, nothing lost: every prediction waits in the spill for Kafka to answer
    # (tests/integration/test_prediction_log_outage.py replays spills into a real broker).
    log = app.state.service.log
    assert (log.sent, log.dropped, log.spilled_records) == (0, 0, 30)


@pytest.mark.timeout(120)
def test_a_newly_promoted_champion_is_served_without_a_restart(served):
    import mlflow

    from skewless.model_artifact import ModelArtifact
    from skewless.registry import ensure_experiment, load_champion, promote, register

    settings, store, _, summary = served
    with TestClient(create_app(settings, store)) as c:
        before = c.post("/v1/predict", json=_tx("u1", "m1", 5.0)).json()
        before_scorer = c.app.state.service.watcher.current.scorer
        art = load_champion(settings)
        challenger = ModelArtifact(**{**art.metadata(), "pipeline": art.pipeline, "version": art.version + "-b",
                                      "threshold": 0.5})
        with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(
                experiment_id=ensure_experiment(settings, "serving-test")) as run:
            challenger.save(Path(tmp) / "model")
            mlflow.log_artifacts(str(Path(tmp) / "model"), artifact_path="model")
        version = register(settings, run.info.run_id)
        promote(settings, version)
        try:
            # The watcher looks every serving.reload_interval_s (0.2 s here); a watcher that
            # never picks it up fails on the test's timeout.
            while (after := c.post("/v1/predict", json=_tx("u1", "m1", 5.0)).json())["model_version"] \
                    == before["model_version"]:
                time.sleep(0.1)
            assert after["model_version"] == challenger.version and after["threshold"] == 0.5
            assert c.get("/readyz").json()["model"]["version"] == challenger.version
            now = c.app.state.service.watcher.current  # a scorer compiled for the new model, not the old one's
            assert now.scorer is not before_scorer and now.scorer.model is now.artifact.pipeline
            scored = c.post("/v1/predict", params={"include_features": "true"}, json=_tx("u1", "m1", 5.0)).json()
            x = np.array([[math.nan if v is None else v for v in scored["features"].values()]])
            assert scored["score"] == pytest.approx(now.artifact.pipeline.predict_proba(x)[0, 1], abs=1e-9)
        finally:
            promote(settings, summary["registered_version"])


# -- fuzzing against the published schema -----------------------------------------------

def test_fuzzing_the_openapi_schema_finds_no_server_errors(served):
    """Schemathesis generates requests for every operation from the published schema
    (valid and not); none may be a 500."""
    from hypothesis import given

    settings, store, *_ = served
    watcher = ChampionWatcher(settings, store)
    assert watcher.refresh()
    app = create_app(settings, store, watcher=watcher)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [op.ok() for op in schema.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in operations} >= {"POST /v1/predict", "POST /v1/features"}
    statuses: list[int] = []
    for operation in operations:
        @given(case=operation.as_strategy())
        @hsettings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case):
            response = case.call()
            statuses.append(response.status_code)
            assert response.status_code < 500, (operation.path, response.status_code, response.text[:300], case.body)

        call()
    assert any(200 <= s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses)


# -- the real server --------------------------------------------------------------------

def test_skewless_serve_runs_the_api_in_worker_processes(served, settings_file, tmp_path):
    import httpx

    settings, *_ = served
    port = free_port()
    cmd = [sys.executable, "-m", "cli", "serve", "--config", str(settings_file(settings)),
           "--port", str(port), "--workers", "2"]
    server = ServerProcess("skewless serve", cmd, dict(os.environ), tmp_path, tmp_path / "serve.log", port)
    try:
        server.wait_ready("/readyz", timeout=120)  # raises with the server's log if it exits instead
        for _ in range(6):
            r = httpx.post(f"{server.base}/v1/predict", json=_tx("u1", "m1", 5.0))
            assert r.status_code == 200 and 0 <= r.json()["score"] <= 1
        # Either worker answers /metrics with the sum over both.
        text = httpx.get(f"{server.base}/metrics").text
        assert 'skewless_http_requests_total{method="POST",route="/v1/predict",status="200"} 6.0' in text
    finally:
        server.stop()
