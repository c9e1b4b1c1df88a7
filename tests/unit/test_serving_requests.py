"""The pure parts of the API's front door: strict JSON decoding, bounded error answers,
the body cap on bytes read, entity checks, and the request-time transform's gap.
(``tests/integration/test_serving_hostile.py`` drives the same through a real server.)"""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from feature_repo.specs import _request_features
from serving.guard import Guard
from serving.online_reader import FeaturePlan, PlanError, _OnDemand, _ViewRead
from serving.request_body import MAX_ANSWER_BYTES, MAX_ECHO, MAX_ERRORS, decode, echo, validation_error_body

# -- decoding ----------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    b'{"amount": NaN}', b'{"amount": Infinity}', b'{"amount": -Infinity}', b'{"amount": 1e400}',
    b'{"amount": -1e400}', b'{"id": "\\ud800"}', b'{"id": "\\udc00"}', b'{"id": "\\ud800\\ud800"}',
    b'{"id": "\xed\xa0\x80"}', b'{"id": "\xff"}', b'{"a": 1, "a": 2}', b'{"e": [{"k": 1, "k": 1}]}',
    b'{"a": {"b": 1}, "a": {"b": 1}}', b'{not json', b"[" * 5000 + b"]" * 5000,
])
def test_what_is_not_strict_json_is_a_json_decode_error(body):
    with pytest.raises(json.JSONDecodeError):
        decode(body)


def test_strict_json_decodes_as_usual():
    body = '{"id": "\\ud83d\\ude00 é", "n": 1e308, "tiny": 1e-400, "big": 18446744073709551615, "e": [{"k": 1}, {"k": 2}]}'
    assert decode(body.encode()) == {"id": "😀 é", "n": 1e308, "tiny": 0.0, "big": 2**64 - 1,
                                     "e": [{"k": 1}, {"k": 2}]}


def test_nesting_deeper_than_pythons_parser_takes_is_a_decode_error_not_a_recursion_error():
    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # the server's stack is deeper than a test's: make the limit near
    try:
        with pytest.raises(json.JSONDecodeError, match="nested too deeply"):
            decode(b"[" * 500 + b"]" * 500)  # orjson takes it (1024 levels); the duplicate check cannot
    finally:
        sys.setrecursionlimit(limit)


def test_a_duplicate_key_is_named():
    with pytest.raises(json.JSONDecodeError, match="duplicate key 'amount'"):
        decode(b'{"user_id": "u", "amount": 1, "amount": 1000000}')


# -- error answers -------------------------------------------------------------------------

hostile_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text()
    | st.integers(0xD800, 0xDFFF).map(lambda c: "x" + chr(c)),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5),
    max_leaves=30)


@given(st.lists(st.fixed_dictionaries({
    "type": st.text(max_size=100), "loc": st.lists(st.text(max_size=200) | st.integers(), max_size=20),
    "msg": st.text(max_size=700), "input": hostile_values,
    "ctx": st.dictionaries(st.text(max_size=50), hostile_values, max_size=10)}), max_size=25))
@hsettings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_an_error_answer_is_valid_json_and_bounded_whatever_the_errors_hold(errors):
    body = validation_error_body(errors)
    answer = orjson.loads(body)  # valid JSON: no NaN, no lone surrogate
    assert 0 < len(answer["detail"]) <= MAX_ERRORS or not errors
    assert answer["error_count"] == len(errors) and len(body) <= MAX_ANSWER_BYTES


def test_every_error_is_listed_up_to_the_limit():
    errors = [{"type": "missing", "loc": ("body", f"f{i}"), "msg": "Field required", "input": {}} for i in range(50)]
    answer = orjson.loads(validation_error_body(errors))
    assert [e["loc"] for e in answer["detail"]] == [["body", f"f{i}"] for i in range(MAX_ERRORS)]
    assert answer["error_count"] == 50


def test_echoes_are_cut_and_made_json_safe():
    assert echo("x" * 10_000) == "x" * MAX_ECHO + "..."
    assert echo(float("nan")) == "nan" and echo(float("-inf")) == "-inf" and echo(1.5) == 1.5
    assert echo("a\ud800b") == "a\\ud800b"
    assert echo(2**70) == str(2**70) and echo(7) == 7 and echo(None) is None and echo(True) is True
    sketch = echo({"entities": [{"user_id": "u" * 1000}] * 100_000})
    assert isinstance(sketch, str) and len(sketch) <= MAX_ECHO + 3 and sketch.startswith('{"entities":[{"user_id":')
    assert echo({"a": 1, "b": [1, 2]}) == '{"a":1,"b":[1,2]}'
    assert echo([float("nan"), "\udc00"]) == '["nan","\\\\udc00"]'


def test_a_7_mib_input_echoed_by_every_error_gives_a_small_answer():
    whole = {"entities": [{"user_id": ["x" * 100]}] * 20_000}
    errors = [{"type": "string_type", "loc": ("body", "entities", i, "user_id"), "msg": "Input should be a "
               "valid string", "input": whole} for i in range(20_000)]
    body = validation_error_body(errors)
    assert len(body) < 8_000 and orjson.loads(body)["error_count"] == 20_000


# -- the body cap counts bytes read -----------------------------------------------------------

async def _body_app(scope, receive, send):
    """Reads the whole body, then answers 200 with its length."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


def _run(app, chunks: int, chunk: bytes, headers: list | None = None) -> tuple[list[dict], int]:
    pulled = 0
    sent: list[dict] = []

    async def receive():
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": pulled < chunks}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/features", "headers": headers or []}
    asyncio.run(app(scope, receive, send))
    return sent, pulled


def test_a_chunked_body_over_the_cap_is_413_and_the_rest_is_never_read():
    guard = Guard(_body_app, api_key=None, max_body=1024 * 1024)
    sent, pulled = _run(guard, chunks=10_000, chunk=b"x" * 65536)  # 625 MiB offered, no Content-Length
    start, body = sent[0], sent[1]
    assert start["status"] == 413 and (b"connection", b"close") in start["headers"]
    assert b"larger than 1048576 bytes" in body["body"]
    assert pulled == 1024 * 1024 // 65536 + 1  # one chunk past the cap, then no more


def test_a_body_within_the_cap_passes_and_a_path_can_have_a_lower_cap():
    guard = Guard(_body_app, api_key=None, max_body=1024 * 1024, body_limits={"/v1/predict": 1000})
    sent, _ = _run(guard, chunks=16, chunk=b"x" * 65536)
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"1048576"
    sent, _ = _run(guard, chunks=1, chunk=b"x", headers=[(b"content-length", b"2000000")])
    assert sent[0]["status"] == 413  # a declared length over the cap: not read at all

    async def predict_path(scope, receive, send):
        await Guard(_body_app, api_key=None, body_limits={"/v1/predict": 1000})(
            {**scope, "path": "/v1/predict"}, receive, send)

    assert _run(predict_path, chunks=2, chunk=b"x" * 600)[0][0]["status"] == 413


def test_an_unhandled_error_is_a_500_answer_not_a_dropped_connection():
    async def broken(scope, receive, send):
        raise RuntimeError("a bug")

    sent, _ = _run(Guard(broken, api_key=None), chunks=1, chunk=b"{}")
    assert sent[0]["status"] == 500 and orjson.loads(sent[1]["body"]) == {"detail": "internal error"}


# -- entity rows ------------------------------------------------------------------------------


def _plan() -> FeaturePlan:
    views = [_ViewRead("spend", ("user_id",), ("string_val",), ["n"], [b"h", b"_ts:spend"], None, [True]),
             _ViewRead("acct", ("account",), ("int64_val",), ["n"], [b"h", b"_ts:acct"], None, [True])]
    od = _OnDemand("req", lambda cols: cols, ["gap"], ["amount", "event_epoch", "other"], True)
    return FeaturePlan(views, [od], ["spend__n", "acct__n", "req__gap"], "proj", 3)


GOOD = {"user_id": "u1", "account": 7, "amount": 12.5, "event_epoch": 1.8e9, "other": -3.0}


@pytest.mark.parametrize("field, value, needle", [
    ("amount", math.nan, "finite"), ("amount", math.inf, "finite"), ("event_epoch", -math.inf, "finite"),
    ("other", math.nan, "finite"), ("amount", -1.0, "in [0.01"), ("amount", 0.0, "in [0.01"),
    ("amount", 1e300, "in [0.01"), ("event_epoch", -1.0, "in [946684800"), ("event_epoch", 4102444800.0, "in ["),
    ("amount", True, "a number"), ("amount", "1", "a number"), ("amount", None, "a number"),
    ("user_id", "u" * 10_000, "at most 256"), ("user_id", "", "non-empty"), ("user_id", "   ", "blank"),
    ("user_id", "a\x00b", "printable"), ("user_id", "a\ud800", "printable"), ("user_id", 5, "a string"),
    ("account", "7", "an integer"), ("account", True, "an integer"), ("account", 2**63, "64-bit"),
])
def test_entity_values_outside_the_contract_are_named(field, value, needle):
    with pytest.raises(PlanError, match="entities\\[3\\]") as err:
        _plan().check_row({**GOOD, field: value}, 3)
    assert field in str(err.value) and needle in str(err.value)


def test_entity_values_at_the_edges_pass():
    plan = _plan()
    for row in ({**GOOD, "amount": 0.01, "event_epoch": 946684800.0, "account": -(2**63)},
                {**GOOD, "amount": 1_000_000, "event_epoch": 4102444799.999999, "user_id": "u" * 256, "account": 2**63 - 1},
                {**GOOD, "user_id": "Zoë van Dijk", "other": -1e308}):
        plan.check_row(row)


# -- the request-time transform ------------------------------------------------------------------

def _inputs(event_epoch: list[float], last_tx: list[float]) -> dict[str, np.ndarray]:
    n = len(event_epoch)
    return {"event_epoch": np.array(event_epoch), "user_diversity__last_tx_time": np.array(last_tx),
            "amount": np.full(n, 10.0), "user_spend__mean_amount_7d": np.full(n, 5.0),
            "merchant_activity__count_30d": np.full(n, 3.0), "merchant_chargebacks__chargebacks_30d": np.zeros(n),
            "user_merchant__tx_count_30d": np.ones(n)}


def test_a_transaction_older_than_the_last_known_one_has_an_unknown_gap_in_both_modes():
    cols = _inputs([2000.0, 1000.0, 1000.0, 1000.0], [1000.0, 2000.0, math.nan, 1000.0])
    online = _request_features(cols)["seconds_since_last_tx"]
    offline = _request_features(pd.DataFrame(cols))["seconds_since_last_tx"].to_numpy()
    for out in (online, offline):
        assert out[0] == 1000.0 and math.isnan(out[1]) and math.isnan(out[2]) and out[3] == 0.0
