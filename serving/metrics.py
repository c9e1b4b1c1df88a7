"""Prometheus metrics of the online API, served at ``GET /metrics``.

With ``skewless serve --workers N`` (N > 1) the CLI sets ``PROMETHEUS_MULTIPROC_DIR``
before anything imports prometheus_client, so every worker writes its samples there
and ``/metrics`` sums them across workers.
"""

from __future__ import annotations

import os

from prometheus_client import values
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_FAST = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter("skewless_http_requests_total", "HTTP requests by route, method and status",
                   ["route", "method", "status"])
LATENCY = Histogram("skewless_http_request_seconds", "HTTP request latency by route", ["route", "method"],
                    buckets=_FAST)
ONLINE_LATENCY = Histogram("skewless_online_store_seconds", "latency of one online-store read (all views, "
                           "one pipeline)", buckets=_FAST)
ONLINE_ERRORS = Counter("skewless_online_store_errors_total", "online-store reads that failed or timed out")
STALENESS = Histogram("skewless_feature_staleness_seconds", "age of the served feature row (now - its event "
                      "time) by feature view", ["view"],
                      buckets=(60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400, 365 * 86400))
NOT_FOUND = Counter("skewless_entities_not_found_total", "entity rows a feature view had no values for", ["view"])
PREDICTIONS = Counter("skewless_predictions_total", "predictions by decision", ["decision"])
MODEL = Gauge("skewless_model_info", "1 for the model version being served", ["model", "version"],
              multiprocess_mode="max")
MODEL_RELOADS = Counter("skewless_model_reloads_total", "champion changes picked up without a restart")
STORE_LOADED = Gauge("skewless_online_store_loaded", "1 when the online store's watermark covers every feature "
                     "view (materialize loaded it and it was not lost since), 0 when it is missing (empty or lost "
                     "store: run skewless features materialize); checked on /readyz and every "
                     "serving.reload_interval_s", multiprocess_mode="livemin")
WATERMARK_AGE = Gauge("skewless_online_store_watermark_age_seconds", "now - the time each feature view is loaded "
                      "up to, from the online store's watermark (+Inf when the view has none); updated when "
                      "skewless_online_store_loaded is", ["view"], multiprocess_mode="livemax")
# The streaming feature job's status (``skewless.features.stream_status``), read from the
# online store's Redis on every scrape and every serving.reload_interval_s. NaN = unknown.
# "mostrecent": with several workers /metrics shows the value computed last, by any of them.
_STREAM_READ = ("read from the stream's status hash in the online store on every scrape of /metrics and every "
                "serving.reload_interval_s")
STREAM_STATUS_READ = Gauge("skewless_stream_status_readable", "1 when the last read of the streaming job's status "
                           "(" + _STREAM_READ + ") succeeded; 0 when Redis failed or answered with an error: the "
                           "other skewless_stream_* values are then the last ones read, and the ages keep growing "
                           "from them", multiprocess_mode="livemostrecent")
STREAM_RAN = Gauge("skewless_stream_ran", "1 when the streaming job (skewless etl stream) has applied at least one "
                   "micro-batch to this online store (its status hash exists); 0 when it never ran here or its "
                   "state was lost with the store: then every other skewless_stream_* gauge and "
                   "skewless_feature_freshness_seconds are NaN", multiprocess_mode="livemostrecent")
FRESHNESS = Gauge("skewless_feature_freshness_seconds", "now - the newest event time the streaming job has applied "
                  "to the feature view (the age of its freshest event online); NaN when the stream never ran or "
                  "applied no event of the view yet; negative when event times are ahead of serving's clock; "
                  + _STREAM_READ, ["view"], multiprocess_mode="livemostrecent")
STREAM_LAG = Gauge("skewless_stream_lag_records", "Kafka records the streaming job was behind the latest offsets "
                   "(all its topics and partitions) at its last micro-batch; NaN when it never ran or did not "
                   "measure it; " + _STREAM_READ, multiprocess_mode="livemostrecent")
STREAM_BATCH_AGE = Gauge("skewless_stream_last_batch_age_seconds", "now - when the streaming job last applied a "
                         "micro-batch (Spark runs one when records arrive: this grows while the stream is stopped "
                         "or stalled, and while its topics are quiet); NaN when it never ran; " + _STREAM_READ,
                         multiprocess_mode="livemostrecent")
STREAM_EVENTS = Gauge("skewless_stream_events_applied", "events the streaming job has applied since its state was "
                      "(re)built (grows like a counter; drops to 0 when the state is rebuilt); NaN when it never "
                      "ran; " + _STREAM_READ, multiprocess_mode="livemostrecent")
STREAM_BATCH = Gauge("skewless_stream_last_batch", "Spark batch id of the last micro-batch the streaming job "
                     "applied; NaN when it never ran; " + _STREAM_READ, multiprocess_mode="livemostrecent")
# The latest drift check (``skewless.drift_status``, written by skewless monitor drift), read
# on every scrape and every serving.reload_interval_s (``serving.drift_figures``). NaN = unknown.
_DRIFT_READ = ("from the latest drift check (skewless monitor drift) of the newest traffic, read from its status file "
               "on every scrape")
DRIFT_READ = Gauge("skewless_drift_status_readable", "1 when the drift status file was readable (or is absent: no "
                   "check yet) at the last read; 0 when it was not: the other skewless_drift_* values are then the "
                   "last ones read", multiprocess_mode="livemostrecent")
DRIFT_SCORE = Gauge("skewless_drift_score", "the feature's drift statistic: Wasserstein-1 distance in robust "
                    "standard deviations of the reference (numbers) or Jensen-Shannon distance (categories) between "
                    "the champion's training set and the live predictions; NaN when not measurable; "
                    + _DRIFT_READ, ["feature"], multiprocess_mode="livemostrecent")
DRIFT_MISSING = Gauge("skewless_drift_missing_rate_change", "the feature's missing rate, live minus reference; "
                      + _DRIFT_READ, ["feature"], multiprocess_mode="livemostrecent")
DRIFT_FLAGGED = Gauge("skewless_drift_flagged", "1 when the feature drifted (material and significant after Holm's "
                      "correction at monitoring.alpha), 0 when not; " + _DRIFT_READ, ["feature"],
                      multiprocess_mode="livemostrecent")
DRIFT_DETECTED = Gauge("skewless_drift_detected", "1 when some feature drifted, 0 when none; NaN before the first "
                       "check; " + _DRIFT_READ, multiprocess_mode="livemostrecent")
DRIFT_CHECKED = Gauge("skewless_drift_checked_timestamp_seconds", "unix time the latest drift check ran; NaN before "
                      "the first; " + _DRIFT_READ, multiprocess_mode="livemostrecent")
DRIFT_WINDOW_END = Gauge("skewless_drift_window_end_timestamp_seconds", "unix time the latest drift check's live "
                         "window ends (predictions before it were compared); " + _DRIFT_READ,
                         multiprocess_mode="livemostrecent")
DRIFT_PREDICTIONS = Gauge("skewless_drift_predictions", "predictions compared by the latest drift check; "
                          + _DRIFT_READ, multiprocess_mode="livemostrecent")
LOG_SENT = Counter("skewless_prediction_log_sent_total", "predictions in the predictions topic: acknowledged by "
                   "the broker, or (for a spilled one that may have been written) found there before a resend")
LOG_DROPPED = Counter("skewless_prediction_log_dropped_total", "predictions not logged: the in-memory queue or, "
                      "with Kafka away, the spill was full (or a spilled record was unreadable); the predictions "
                      "themselves were answered")
LOG_FAILED = Counter("skewless_prediction_log_failed_deliveries_total", "deliveries to Kafka that ended without "
                     "an acknowledgement; the record went to the spill, not lost")
LOG_REPLAYED = Counter("skewless_prediction_log_replayed_total", "spilled predictions acknowledged on replay "
                       "(also counted in sent)")
LOG_FOUND = Counter("skewless_prediction_log_found_in_topic_total", "spilled predictions not sent again because "
                    "they were already in the topic (also counted in sent)")
LOG_SPILL_RECORDS = Gauge("skewless_prediction_log_spill_records", "predictions waiting in the on-disk spill for "
                          "Kafka", multiprocess_mode="livesum")
LOG_SPILL_BYTES = Gauge("skewless_prediction_log_spill_bytes", "bytes of the on-disk spill",
                        multiprocess_mode="livesum")


# Whether samples live in files shared by worker processes: decided when prometheus_client
# was imported. (Feast sets PROMETHEUS_MULTIPROC_DIR when it loads its own metrics module,
# later, so the variable alone does not say how *our* values are stored.)
MULTIPROCESS = values.ValueClass is not values.MutexValue


def show_model(model: str, version: str) -> None:
    """Make ``version`` the one model_info reports as 1; earlier ones drop to 0."""
    for labels in list(MODEL._metrics):
        MODEL.labels(*labels).set(0)
    MODEL.labels(model, version).set(1)


def forget_dead_process(pid: int) -> None:
    """Drop the live gauges of a worker process that died (its files would otherwise be
    summed into /metrics forever)."""
    if MULTIPROCESS and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def render() -> tuple[bytes, str]:
    if MULTIPROCESS and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
