"""``skewless demo`` end to end at a small size, against the real Kafka, Redis, Spark,
Feast, MLflow and API server: the streaming job runs beside the API, a burst of payments
moves the user's 1h count online and in what the model is scored with, and the served
values equal the offline point-in-time values."""

from __future__ import annotations

import os

import pytest
import redis

from cli.demo import run_demo
from etl.stream_state import StreamState
from skewless.features import store as feast_store
from tests.integration.spark_fixtures import spark  # noqa: F401

pytestmark = pytest.mark.integration

BURST = 3


# 10,000 payments: the loop's champion learns from the 13 days before fraud changes, which at
# 5,000 left too few frauds for its test split.
@pytest.mark.timeout(1800)
def test_demo_streams_a_burst_into_the_count_and_the_score_and_serves_the_offline_values(
        spark, make_settings, capfd):  # noqa: F811
    settings = make_settings(feast_project=f"demo{os.getpid()}")
    try:
        summary = run_demo(settings, events=10_000, days=30, fresh=True, burst=BURST)
        printed = capfd.readouterr().err
    finally:
        client = redis.Redis.from_url(settings.redis_url)
        StreamState(client, settings.feast_project).reset()
        store = feast_store.feature_store(settings)
        store._get_provider().teardown_infra(store.project, tables=store.list_feature_views(),
                                             entities=store.list_entities())

    burst = summary["burst"]
    # Every payment of the burst reached the online store through the stream ...
    assert burst["seen"] == BURST and all(s is not None for s in burst["seen_after_s"])
    assert burst["count_after"] == burst["count_before"] + BURST
    # ... and the model was scored with it: the served vectors before and after differ by the burst.
    count = "user_spend__count_1h"
    assert burst["served_before"][count] == burst["count_before"]
    assert burst["served_after"][count] == burst["count_before"] + BURST
    assert 0.0 <= burst["score_before"] <= 1.0 and 0.0 <= burst["score_after"] <= 1.0

    stream = summary["stream"]
    landed = sum(summary["verify"][t]["valid"] for t in (settings.topics.transactions, settings.topics.labels))
    assert stream["applied"] >= landed + BURST  # the backlog (at least what step 3 landed) and the burst
    assert stream["lag"] == 0

    served = summary["served_consistency"]
    # Every prediction of the demo (the showcase's and the burst's two) landed, was covered
    # by the incremental batch run, and was scored with exactly the offline values.
    assert served["predictions"] == summary["serve"]["predictions"] == 6 + 2
    assert served["compared_predictions"] == served["predictions"] and served["not_yet_covered"] == 0
    t = served["totals"]
    assert t["compared"] > 0 and (t["mismatches"], t["missing"], t["extra"]) == (0, 0, 0), served["examples"]


    # The loop: the champion's predictions of the drifted days logged and landed, the drift
    # check on them, retrain --if-drift's decision (or why not), the report written.
    logged = summary["loop_predictions"]
    assert logged["predictions"] > 0 and logged["landed"] == logged["predictions"]
    drift = summary["loop_drift"]
    assert drift["predictions"] == logged["predictions"] and drift["model_version"] == logged["model_version"]
    retrained = summary["loop_retrain"]
    if drift["drifted"]:
        d = retrained["decision"]
        assert retrained["retrained"] and retrained["promoted"] == (d["relative"] >= settings.retrain.margin
                                                                    and d["difference_ci"][0] > 0)
        assert ("PROMOTED" if retrained["promoted"] else "kept the champion") in printed
    else:
        assert not retrained["retrained"] and "not retraining: " in printed
    report = summary["loop_report"]
    assert os.path.isfile(report["path"]) and f"report: {report['path']}" in printed.replace("\n", "")
    loop = printed[printed.index("15. the loop"):]
    for line in ("16. monitor drift", "17. retrain --if-drift", "18. monitor report --out DIR"):
        assert line in loop
    assert "Warning" not in loop and "Traceback" not in loop  # our output, not a library's
