"""The online API against a hostile client: JSON that is not JSON (NaN, Infinity, 1e400,
lone surrogates, invalid UTF-8, duplicate keys), bodies too big or sent in chunks, error
answers that would echo megabytes, entities out of every range. None may be a 500, none
may cost the keep-alive connection, none may grow the server without bound.

Real parts: Redis, Feast (its registry applied, rows written by Feast to Redis), MLflow
(a small champion registered and promoted), and ``skewless serve`` as a real process
spoken to over raw sockets (so the bytes on the wire are exactly the hostile ones)."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from serving.app import create_app
from serving.online_reader import FeaturePlan
from serving.request_body import MAX_ERRORS
from skewless.contracts import MAX_TEXT_LENGTH, TRANSACTIONS
from skewless.features import store as feast_store
from skewless.features.definitions import load as load_definitions
from skewless.services.server_process import ServerProcess, free_port
from tests.isolation import isolated_settings

SERVICE = "fraud_model_v1"
KNOWN_USER, KNOWN_MERCHANT = "u-known", "m-known"
LAST_TX = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)  # the known user's last transaction
TX = {"transaction_id": "t-1", "user_id": KNOWN_USER, "merchant_id": KNOWN_MERCHANT, "amount": 42.5,
      "currency": "EUR", "country": "DE", "channel": "web", "device_id": "d-1", "event_time": "2026-03-02T12:00:00Z"}
TEXT_FIELDS = [f.name for f in TRANSACTIONS.fields if f.kind == "str"]
ENTITY = {"user_id": KNOWN_USER, "merchant_id": KNOWN_MERCHANT, "amount": 10.0, "event_epoch": LAST_TX.timestamp()}


def _write_online_rows(store) -> None:
    """One known user and merchant, written by Feast itself into Redis."""
    at = pd.Timestamp(LAST_TX)
    rows = {
        "user_diversity": {"user_id": KNOWN_USER, "distinct_merchants_24h": 2, "distinct_countries_24h": 1,
                           "distinct_devices_24h": 1, "last_tx_time": LAST_TX.timestamp()},
        "merchant_activity": {"merchant_id": KNOWN_MERCHANT, "count_1h": 1, "count_24h": 5, "count_30d": 40},
    }
    for view, row in rows.items():
        ts = store.get_feature_view(view).batch_source.timestamp_field
        store.write_to_online_store(view, pd.DataFrame([{**row, ts: at}]))


def _promote_a_champion(settings, store) -> list[str]:
    """A small real model over the service's features (fit on noise: these tests are
    about the HTTP layer), registered and promoted in MLflow like a trained one."""
    import tempfile

    import mlflow

    from skewless.model_artifact import ModelArtifact
    from skewless.registry import ensure_experiment, promote, register
    from training.models import logistic

    features = FeaturePlan.for_service(store, SERVICE).names + ["amount"]
    rng = np.random.default_rng(0)
    pipeline = logistic(0).fit(rng.normal(size=(200, len(features))), rng.integers(0, 2, 200))
    art = ModelArtifact(pipeline=pipeline, model_name=settings.training.model_name, version="hostile-1",
                        feature_service=SERVICE, feast_project=store.project, features=features, threshold=0.5,
                        trained_at=datetime.now(timezone.utc).isoformat())
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(
            experiment_id=ensure_experiment(settings, "hostile")) as run:
        art.save(Path(tmp) / "model")
        mlflow.log_artifacts(str(Path(tmp) / "model"), artifact_path="model")
    promote(settings, register(settings, run.info.run_id))
    return features


@pytest.fixture(scope="module")
def hostile(services, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    settings = isolated_settings(services, tmp, feast_project=f"h{uuid.uuid4().hex[:8]}",
                                 serving={"log_predictions": False})
    store = feast_store.feature_store(settings)
    feast_store.apply(settings, load_definitions(settings), store)
    _write_online_rows(store)
    _promote_a_champion(settings, store)
    yield settings, store
    store._get_provider().teardown_infra(store.project, tables=store.list_feature_views(), entities=store.list_entities())


@pytest.fixture(scope="module")
def client(hostile):
    settings, store = hostile
    with TestClient(create_app(settings, store)) as c:
        yield c


@pytest.fixture(scope="module")
def server(hostile, tmp_path_factory):
    """``skewless serve`` as a real process (one worker: its pid is the one whose memory counts)."""
    settings, _ = hostile
    tmp = tmp_path_factory.mktemp("server")
    data = settings.model_dump(mode="json", exclude={"config_file"})
    for section, key in (("kafka", "sasl_password"), (None, "redis_password"), ("serving", "api_key")):
        (data.get(section, {}) if section else data).pop(key, None)
    config = tmp / "skewless.yaml"
    config.write_text(yaml.safe_dump(data))
    port = free_port()
    cmd = [sys.executable, "-m", "cli", "serve", "--config", str(config), "--port", str(port),
           "--workers", "1"]
    proc = ServerProcess("skewless serve", cmd, dict(os.environ), tmp, tmp / "serve.log", port)
    try:
        proc.wait_ready("/healthz", timeout=120)
        with Connection(port) as conn:  # the champion is loaded before the first request is served
            status, _, body = conn.request("POST", "/v1/predict", orjson.dumps(TX))
            assert status == 200, (body, proc.log_tail())
        yield proc
    finally:
        proc.stop()


# -- a raw HTTP/1.1 client: the bytes we send are the bytes the server gets ---------------

class Connection:
    """One keep-alive TCP connection; ``request`` sends exact bytes and reads one answer."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"server closed the connection (had {self.buf[:200]!r})")
            self.buf += chunk
        head, self.buf = self.buf.split(marker, 1)
        return head

    def read_response(self) -> tuple[int, dict[str, str], bytes]:
        head = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head[1:])}
        length = int(headers.get("content-length", 0))
        while len(self.buf) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection mid-body")
            self.buf += chunk
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def request(self, method: str, path: str, body: bytes = b"",
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        lines = [f"{method} {path} HTTP/1.1", "Host: test", "Content-Type: application/json",
                 f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        return self.read_response()


def _tx_with(field: str, raw_value: bytes) -> bytes:
    """The valid transaction with one field's value replaced by raw JSON bytes."""
    return orjson.dumps({**TX, field: "__X__"}).replace(b'"__X__"', raw_value)


def _entity_with(field: str, raw_value: bytes) -> bytes:
    body = {"feature_service": SERVICE, "entities": [{**ENTITY, field: "__X__"}]}
    return orjson.dumps(body).replace(b'"__X__"', raw_value)


NON_FINITE = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1E999", b"nan", b"inf"]
SURROGATES = [b'"\\ud800"', b'"x\\udfff"', b'"\\ud800x"', b'"\\udc00\\ud800"', b'"\xed\xa0\x80"', b'"a\xff"']

HOSTILE_BODIES = (
    [("/v1/predict", _tx_with("amount", v), "amount NaN-like " + v.decode()) for v in NON_FINITE]
    + [("/v1/predict", _tx_with(f, s), f"surrogate in {f}") for f in TEXT_FIELDS for s in SURROGATES[:1]]
    + [("/v1/predict", _tx_with("user_id", s), f"bad text {s!r}") for s in SURROGATES]
    + [("/v1/predict", _tx_with("event_time", b'"2026-03-01T00:00:00\\ud800Z"'), "surrogate in a time")]
    + [("/v1/features", _entity_with(k, v), f"{k} {v.decode()}") for k in ("amount", "event_epoch")
       for v in NON_FINITE[:4]]
    + [("/v1/features", _entity_with(k, s), f"surrogate in entity {k}") for k in ("user_id", "merchant_id")
       for s in SURROGATES]
    + [("/v1/features", orjson.dumps({"feature_service": SERVICE, "entities": [ENTITY]})
        .replace(b'"user_id"', b'"user\\ud800_id"'), "surrogate in an entity key")]
    + [("/v1/predict", orjson.dumps(TX)[:-1] + b',"amount":1e6}', "duplicate key in a transaction"),
       ("/v1/features", orjson.dumps({"feature_service": SERVICE, "entities": [ENTITY]})
        .replace(b'"amount":10.0', b'"amount":10.0,"amount":20.0'), "duplicate key in an entity"),
       ("/v1/predict", b'{"amount": NaN, "surprise": Infinity}', "NaN where the 422 echoes the input"),
       ("/v1/predict", orjson.dumps({**TX, "extra": "__X__"}).replace(b'"__X__"', b"[NaN]"), "NaN in an extra"),
       ("/v1/predict", b"[" * 1000 + b"]" * 1000, "arrays nested 1000 deep"),
       ("/v1/features", b'{"a":' * 990 + b"1" + b"}" * 990, "objects nested 990 deep")]
)


def test_hostile_json_is_422_and_the_next_request_on_the_connection_succeeds(server):
    """Every class that used to be a 500 (and close the keep-alive connection): each is a
    422 naming the problem, and the same connection then serves a valid prediction."""
    valid = orjson.dumps(TX)
    with Connection(server.port) as conn:
        for path, body, what in HOSTILE_BODIES:
            status, headers, answer = conn.request("POST", path, body)
            assert status == 422, (what, status, answer[:300])
            detail = orjson.loads(answer)["detail"]  # valid JSON, whatever was sent
            assert detail and headers.get("connection") != "close", (what, answer[:300])
            status, _, answer = conn.request("POST", "/v1/predict", valid)
            assert status == 200, (what, answer[:300])
    log = server.log_tail(20000)
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log


def test_the_decode_error_says_what_was_wrong(client):
    cases = {
        _tx_with("amount", b"NaN"): "expected a JSON value",
        _tx_with("amount", b"1e400"): "infinity",
        _tx_with("user_id", b'"\\ud800"'): "surrogate",
        orjson.dumps(TX)[:-1] + b',"amount":1e6}': "duplicate key 'amount'",
    }
    for body, needle in cases.items():
        r = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422 and needle in r.text, (body, r.text)
        assert r.json()["detail"][0]["type"] == "json_invalid"


# -- fuzzing the classes that used to be 500s -----------------------------------------------

non_finite = st.sampled_from(["NaN", "Infinity", "-Infinity", "nan", "inf"]) | st.builds(
    lambda sign, digits, exp: f"{sign}{digits}e{exp}", st.sampled_from(["", "-"]),
    st.integers(1, 99_999), st.integers(309, 100_000))  # overflows a double: infinity


@st.composite
def lone_surrogate_string(draw) -> bytes:
    """A JSON string holding one lone surrogate: escaped (``\\ud800``) or raw UTF-8-ish
    bytes (``\\xed\\xa0\\x80``), among ordinary text."""
    code = draw(st.integers(0xD800, 0xDFFF))
    before = draw(st.text(st.characters(codec="utf-8", exclude_characters='"\\'), max_size=5))
    # A high surrogate escape followed by a low one would be a valid pair: never follow one.
    after = draw(st.text(st.characters(codec="utf-8", exclude_characters='"\\'), max_size=5))
    lone = (f"\\u{code:04x}".encode() if draw(st.booleans())
            else bytes([0xED, 0xA0 | ((code >> 6) & 0x1F), 0x80 | (code & 0x3F)]))
    return b'"' + before.encode() + lone + after.encode() + b'"'


@pytest.mark.timeout(600)
def test_fuzz_non_finite_numbers_and_lone_surrogates_anywhere_are_422(client):
    """Any field of a transaction or an entity row, any key, replaced by a non-finite
    number or a string with a lone surrogate: always a 422 with a small JSON answer."""
    tx_fields = list(TX) + ["mcc", "schema_version", "unknown"]
    entity_fields = list(ENTITY) + ["other"]

    @given(route=st.sampled_from(["/v1/predict", "/v1/features"]), field=st.data(),
           value=non_finite.map(str.encode) | lone_surrogate_string(), in_key=st.booleans())
    @hsettings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def call(route, field, value, in_key):
        if route == "/v1/predict":
            name = field.draw(st.sampled_from(tx_fields))
            body = orjson.dumps({**TX, name: "__X__"})
        else:
            name = field.draw(st.sampled_from(entity_fields))
            body = orjson.dumps({"feature_service": SERVICE, "entities": [{**ENTITY, name: "__X__"}]})
        if in_key and value.startswith(b'"'):  # the surrogate in the key, not the value
            body = body.replace(f'"{name}":"__X__"'.encode(), value + b':"x"')
        else:
            body = body.replace(b'"__X__"', value)
        r = client.post(route, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (body, r.status_code, r.text[:300])
        assert r.json()["detail"] and len(r.content) < 16_384

    call()


# -- bounded work per request -----------------------------------------------------------------

def _rss_peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _chunked_upload(port: int, path: str, total: int, chunk: int = 256 * 1024) -> tuple[int, bytes, int]:
    """Send ``total`` bytes as chunked transfer encoding, stopping as soon as the server
    answers; returns (status, body, bytes sent)."""
    import select

    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sent = 0
    try:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     f"Transfer-Encoding: chunked\r\n\r\n".encode())
        piece = b"%x\r\n" % chunk + b'{"pad":"' + b"x" * (chunk - 10) + b'"}' + b"\r\n"
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered: stop sending
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += chunk
        answer = b""
        while True:  # until the whole answer is in, or the server closed the connection
            data = sock.recv(65536)
            if not data:
                break
            answer += data
            head, _, body = answer.partition(b"\r\n\r\n")
            length = [int(h.split(b":")[1]) for h in head.lower().split(b"\r\n") if h.startswith(b"content-length:")]
            if length and len(body) >= length[0]:
                break
    finally:
        sock.close()
    head, body = answer.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), body, sent


@pytest.mark.timeout(300)
def test_a_chunked_upload_over_the_cap_is_413_and_the_server_stays_small(server):
    """No Content-Length, 200 MiB offered: the server reads at most the cap, answers 413,
    closes the connection, and its peak memory barely moves (it used to buffer it all)."""
    before = _rss_peak_kb(server.proc.pid)
    status, body, sent = _chunked_upload(server.port, "/v1/features", total=200 * 1024 * 1024)
    assert status == 413 and b"larger than" in body
    assert sent < 100 * 1024 * 1024  # it stopped reading: the upload could not go on
    grown_mb = (_rss_peak_kb(server.proc.pid) - before) / 1024
    assert grown_mb < 64, f"server peak RSS grew {grown_mb:.0f} MB"
    with Connection(server.port) as conn:  # and it still answers
        assert conn.request("GET", "/healthz")[0] == 200
        assert conn.request("POST", "/v1/predict", orjson.dumps(TX))[0] == 200


def test_one_transaction_is_at_most_what_its_topic_takes(server):
    padded = orjson.dumps({**TX, "mcc": "5411"})[:-1] + b" " * TRANSACTIONS.max_event_bytes + b"}"
    with Connection(server.port) as conn:
        status, headers, body = conn.request("POST", "/v1/predict", padded)
    assert status == 413 and headers.get("connection") == "close" and b"larger than" in body
    assert _chunked_upload(server.port, "/v1/predict", total=TRANSACTIONS.max_event_bytes * 4, chunk=8192)[0] == 413


def test_error_answers_are_small_whatever_the_request(client):
    """7 MiB of bad entities (every one an error), or a 7 MB key: the answer lists at
    most MAX_ERRORS errors, each echo cut short, and says how many there were."""
    bad = [{"user_id": ["x" * 100] * 3, "amount": "y" * 50}] * 12_000
    body = orjson.dumps({"feature_service": SERVICE, "entities": bad, "z" * 1_500_000: "w" * 1_500_000})
    assert len(body) > 7 * 1024 * 1024
    r = client.post("/v1/features", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    answer = r.json()
    assert len(answer["detail"]) == MAX_ERRORS and answer["error_count"] > 12_000
    assert len(r.content) < 32_768, len(r.content)
    body = orjson.dumps({"feature_service": SERVICE, "entities": [ENTITY], "z" * 7_000_000: ["w" * 100] * 1000})
    r = client.post("/v1/features", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and len(r.content) < 2048, len(r.content)
    (error,) = r.json()["detail"]
    assert error["type"] == "extra_forbidden" and error["loc"][-1].startswith("zzz") and len(error["input"]) < 200


# -- /v1/features: every entity value checked --------------------------------------------------

@pytest.mark.parametrize("field, value, needle", [
    ("amount", -5.0, "amount"), ("amount", 0, "amount"), ("amount", 0.001, "amount"), ("amount", 2e6, "amount"),
    ("amount", "12", "amount"), ("amount", True, "amount"),
    ("event_epoch", -1.0, "event_epoch"), ("event_epoch", 0, "event_epoch"), ("event_epoch", 5e9, "event_epoch"),
    ("user_id", "u" * 10_000, "user_id"), ("user_id", "u" * (MAX_TEXT_LENGTH + 1), "user_id"),
    ("user_id", "   ", "user_id"), ("merchant_id", "m\x00", "merchant_id"), ("merchant_id", " m", "merchant_id"),
    ("merchant_id", "m\u200b", "merchant_id"), ("user_id", 42, "user_id"), ("user_id", 2**63, "user_id"),
])
def test_entity_values_out_of_the_contract_are_422_naming_the_field(client, field, value, needle):
    r = client.post("/v1/features", json={"feature_service": SERVICE, "entities": [ENTITY, {**ENTITY, field: value}]})
    assert r.status_code == 422, r.text
    assert needle in r.text and ("entities[1]" in r.text or "entities" in r.text), r.text


def test_entities_at_the_edges_of_the_contract_are_served(client):
    edges = [{**ENTITY, "amount": 0.01, "event_epoch": datetime(2000, 1, 1, tzinfo=timezone.utc).timestamp()},
             {**ENTITY, "amount": 1_000_000, "user_id": "u" * MAX_TEXT_LENGTH},
             {**ENTITY, "user_id": "é ü 名"}]
    r = client.post("/v1/features", json={"feature_service": SERVICE, "entities": edges})
    assert r.status_code == 200, r.text


def test_an_on_demand_output_with_no_value_is_null_value_not_present(client):
    body = {"feature_service": SERVICE, "entities": [{**ENTITY, "user_id": "never-seen"}]}
    r = client.post("/v1/features", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    row = dict(zip(out["features"], zip(out["results"][0]["values"], out["results"][0]["statuses"])))
    assert row["request_features__seconds_since_last_tx"] == (None, "NULL_VALUE")  # no last transaction
    assert row["request_features__amount_vs_user_mean_7d"] == (None, "NULL_VALUE")
    assert row["request_features__first_tx_at_merchant"] == (1, "PRESENT")


def test_a_transaction_older_than_the_users_last_has_an_unknown_gap_online_and_offline(hostile, client):
    """A request from 2001 for a user last seen in 2026: seconds_since_last_tx is null
    (unknown), not -7.9e8; the offline path (the registered function on a DataFrame, as
    training calls it) gives the same for the same inputs."""
    from training.pit_join import ROW, apply_on_demand

    settings, store = hostile
    early = datetime(2001, 1, 1, tzinfo=timezone.utc)
    later = datetime(2026, 3, 1, 13, tzinfo=timezone.utc)  # one hour after the last transaction
    entities = [{**ENTITY, "event_epoch": early.timestamp()}, {**ENTITY, "event_epoch": later.timestamp()}]
    r = client.post("/v1/features", json={"feature_service": SERVICE, "entities": entities})
    assert r.status_code == 200, r.text
    out = r.json()
    i = out["features"].index("request_features__seconds_since_last_tx")
    assert [row["values"][i] for row in out["results"]] == [None, 3600.0]
    assert [row["statuses"][i] for row in out["results"]] == ["NULL_VALUE", "PRESENT"]

    tx = {**TX, "event_time": early.isoformat()}
    scored = client.post("/v1/predict", params={"include_features": "true"}, json=tx)
    assert scored.status_code == 200, scored.text
    assert scored.json()["features"]["request_features__seconds_since_last_tx"] is None

    # The transform's inputs as served, by reference: the service's vector leaves out one of
    # them (the last transaction's absolute time only feeds this transform).
    odfv = store.get_on_demand_feature_view("request_features")
    refs = [f"{p.name}:{f.name}" for p in odfv.source_feature_view_projections.values() for f in p.features]
    got = client.post("/v1/features", json={"features": refs, "entities": [
        {"user_id": ENTITY["user_id"], "merchant_id": ENTITY["merchant_id"]}]})
    assert got.status_code == 200, got.text
    got = got.json()
    assert "user_diversity__last_tx_time" in got["features"]
    inputs = pd.DataFrame({name: [v, v] for name, v in zip(got["features"], got["results"][0]["values"])})
    inputs["amount"] = [e["amount"] for e in entities]
    inputs["event_epoch"] = [e["event_epoch"] for e in entities]
    inputs[ROW] = range(len(inputs))
    offline = apply_on_demand(inputs.copy(), [odfv])
    assert offline["request_features__seconds_since_last_tx"].isna().tolist() == [True, False]
    assert offline["request_features__seconds_since_last_tx"].iloc[1] == 3600.0


def test_a_request_id_the_prediction_log_would_reject_is_422(client):
    for bad in ("r" * (MAX_TEXT_LENGTH + 1), "   ", " r"):
        r = client.post("/v1/predict", json=TX, headers={"x-request-id": bad})
        assert r.status_code == 422 and "x-request-id" in r.text, r.text
    assert client.post("/v1/predict", json=TX, headers={"x-request-id": "req-1"}).json()["request_id"] == "req-1"


# -- the published schema -----------------------------------------------------------------------

def _walk(node, path=()):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, path + (i,))


def test_openapi_states_bounds_with_standard_json_schema_keywords(client):
    doc = client.get("/openapi.json").json()
    tx = doc["components"]["schemas"]["Transaction"]["properties"]
    assert tx["amount"] == {"type": "number", "minimum": 0.01, "maximum": 1_000_000.0, "title": "Amount"}
    assert tx["user_id"]["minLength"] == 1 and tx["user_id"]["maxLength"] == MAX_TEXT_LENGTH
    assert tx["user_id"]["pattern"] and tx["currency"]["pattern"] == "^[A-Z]{3}$"
    assert doc["components"]["schemas"]["Transaction"]["additionalProperties"] is False
    nonstandard = {"gt", "ge", "lt", "le", "multiple_of", "allow_inf_nan", "max_digits", "strict"}
    for path, node in _walk(doc["components"]["schemas"]):
        if "properties" in path[-1:]:
            continue  # a property may be called anything
        assert not nonstandard & set(node), (path, node)
