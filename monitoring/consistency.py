"""Online/offline consistency, measured: for sampled entities, the values the online
store serves must equal what Feast's offline point-in-time join returns at the same
time — the time the online store was last materialized to. Target: zero mismatches."""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
import pandas as pd

from skewless.errors import DataError
from skewless.features.dsl import RequestInput
from skewless.features.feast_objects import service_request_inputs
from skewless.features.request_inputs import derive
from skewless.settings import Settings


# When two feature values are the same: null equals only null; integers exactly; floats
# to REL_TOL relative (ABS_TOL near zero). Both checks (online vs offline, and as served)
# use these.
REL_TOL = 1e-9
ABS_TOL = 1e-9


def _equal(a: Any, b: Any) -> bool:
    a_null = a is None or (isinstance(a, float) and math.isnan(a))
    b_null = b is None or (isinstance(b, float) and math.isnan(b))
    if a_null or b_null:
        return a_null and b_null
    if isinstance(a, (float, np.floating)) or isinstance(b, (float, np.floating)):
        return math.isclose(float(a), float(b), rel_tol=REL_TOL, abs_tol=ABS_TOL)
    return a == b


def equal_values(a: np.ndarray, b: np.ndarray, exact: bool) -> np.ndarray:
    """``_equal`` element-wise over two float64 arrays (NaN is null): exactly for integer
    features (``exact``), else as ``math.isclose`` with the same tolerances."""
    a_null, b_null = np.isnan(a), np.isnan(b)
    with np.errstate(invalid="ignore"):
        if exact:
            same = a == b
        else:
            same = np.abs(a - b) <= np.maximum(REL_TOL * np.maximum(np.abs(a), np.abs(b)), ABS_TOL)
            same |= a == b  # equal infinities
    return np.where(a_null | b_null, a_null & b_null, same)


def materialized_until(store: Any, service_name: str) -> datetime:
    service = store.get_feature_service(service_name)
    on_demand = {o.name for o in store.list_on_demand_feature_views()}  # computed per request, never materialized
    ends = []
    for proj in service.feature_view_projections:
        if proj.name in on_demand:
            continue
        fv = store.get_feature_view(proj.name)
        if not fv.materialization_intervals:
            raise DataError(f"feature view {fv.name} was never materialized", "run: skewless features materialize")
        ends.append(fv.materialization_intervals[-1][1])
    return min(ends)


def streamed_until(settings: Settings) -> datetime | None:
    """The instant the streaming job last published due rows at (its online values are the
    values at that instant), or None when no stream runs on this store."""
    if settings.online_store != "redis":
        return None
    import redis

    from skewless.features import stream_status

    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    try:
        with redis.Redis.from_url(settings.redis_url, password=password, socket_timeout=5) as client:
            status = stream_status.read(client, settings.feast_project)
    except redis.RedisError:
        return None
    if status is None or status.published_at is None:
        return None
    return datetime.fromtimestamp(status.published_at, timezone.utc)


def request_rows(entities: pd.DataFrame, inputs: Sequence[RequestInput], at: datetime,
                 request: dict[str, Any] | None = None) -> pd.DataFrame:
    """``entities`` (renumbered) with the request inputs of an event of each at ``at``."""
    rows = entities.reset_index(drop=True)
    events = rows.assign(**{**{i.column: 1.0 for i in inputs if i.derive == "value"}, **(request or {})})
    when = pd.Timestamp(at) if pd.Timestamp(at).tz else pd.Timestamp(at).tz_localize("UTC")  # Feast's are UTC
    events = events.assign(**{i.column: when for i in inputs if i.derive == "epoch_seconds"})
    return pd.concat([rows, derive(inputs, events)], axis=1)


def check(settings: Settings, store: Any, entities: pd.DataFrame, service_name: str | None = None,
          request: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compare online and offline values of a FeatureService for ``entities`` (join keys).

    Each entity makes one event at the comparison time, whose other fields are ``request``
    (event fields, e.g. ``{"amount": 100.0}``; any field an input needs and ``request``
    lacks is 1.0: both sides get the same value); the on-demand views' request inputs
    derive from it as training and serving derive them."""
    service_name = service_name or settings.training.feature_service
    at = materialized_until(store, service_name)
    # With the streaming job on this store, the online values are those of its last
    # publication (newer than any materialization): compare at that instant.
    streamed = streamed_until(settings)
    source = "materialize"
    if streamed is not None and streamed > at:
        at, source = streamed, "stream"
    rows = request_rows(entities.drop_duplicates(), service_request_inputs(store, service_name), at, request)
    rows["event_timestamp"] = pd.Timestamp(at)
    service = store.get_feature_service(service_name)
    t0 = time.perf_counter()
    offline = store.get_historical_features(entity_df=rows, features=service, full_feature_names=True).to_df()
    t1 = time.perf_counter()
    online = store.get_online_features(
        features=service, entity_rows=rows.drop(columns=["event_timestamp"]).to_dict("records"),
        full_feature_names=True).to_df()
    t2 = time.perf_counter()
    keys = [c for c in entities.columns]
    features = [c for c in online.columns if "__" in c]
    merged = online.merge(offline, on=keys, suffixes=("_online", "_offline"))
    mismatches = []
    for f in features:
        for _, r in merged.iterrows():
            a, b = r[f"{f}_online"], r[f"{f}_offline"]
            if not _equal(a, b):
                mismatches.append({"feature": f, **{k: r[k] for k in keys}, "online": a, "offline": b})
    compared = len(merged) * len(features)
    return {
        "feature_service": service_name, "at": str(at), "at_from": source, "entities": len(merged), "features": len(features),
        "values_compared": compared, "mismatches": len(mismatches),
        "mismatch_rate": len(mismatches) / compared if compared else None,
        "examples": mismatches[:10], "offline_seconds": round(t1 - t0, 3), "online_seconds": round(t2 - t1, 3),
    }


def sample_entities(settings: Settings, n: int, seed: int = 0) -> pd.DataFrame:
    """(user_id, merchant_id) pairs seen in the lake."""
    from skewless.lake import read_events

    tx = read_events(settings.lake_path, settings.topics.transactions, "event_time",
                     columns=["user_id", "merchant_id"]).to_pandas().drop_duplicates()
    if tx.empty:
        raise DataError("no transactions in the lake to sample entities from")
    return tx.sample(n=min(n, len(tx)), random_state=seed).reset_index(drop=True)
