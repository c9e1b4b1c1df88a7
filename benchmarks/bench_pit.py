"""Point-in-time joins: training-set rows/s for our DuckDB ASOF join and each Feast offline
store, same data, same run.

The entity rows are ``size`` (user, merchant, time) rows drawn from the lake's
transactions (with replacement, times jittered within the data's range); the features
are the whole default FeatureService. Feast's file (dask) store is far slower, so it
joins ``min(size, file_cap)`` rows; its rows/s is what is compared. Needs the demo's
lake and offline tables (``skewless demo``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from skewless.settings import Settings


def entity_rows(settings: Settings, size: int, seed: int = 0) -> pd.DataFrame:
    from skewless.lake import read_events

    tx = read_events(settings.lake_path, settings.topics.transactions, "event_time",
                     columns=["user_id", "merchant_id", "amount", "event_time"]).to_pandas()
    if tx.empty:
        raise RuntimeError("the lake has no transactions: run `skewless demo` first")
    rng = np.random.default_rng(seed)
    rows = tx.iloc[rng.integers(0, len(tx), size)].reset_index(drop=True)
    rows["event_timestamp"] = rows.pop("event_time") + pd.to_timedelta(rng.integers(0, 3600, size), unit="s")
    rows["event_epoch"] = (rows["event_timestamp"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return rows


def _join(settings: Settings, store_type: str, rows: pd.DataFrame) -> tuple[float, int]:
    from skewless.features.store import feature_store

    s = settings.model_copy(update={"offline_store": store_type})
    store = feature_store(s)
    service = store.get_feature_service(s.training.feature_service)
    t0 = time.perf_counter()
    df = store.get_historical_features(entity_df=rows, features=service, full_feature_names=True).to_df()
    return time.perf_counter() - t0, len(df)


def _asof(settings: Settings, rows: pd.DataFrame) -> tuple[float, int]:
    from skewless.features.store import feature_store
    from training.pit_join import historical_features

    store = feature_store(settings)
    t0 = time.perf_counter()
    df = historical_features(store, settings.training.feature_service, rows)
    return time.perf_counter() - t0, len(df)


def run(settings: Settings, size: int = 100_000, repeats: int = 1, file_cap: int = 20_000, **_: Any) -> dict[str, Any]:
    rows = entity_rows(settings, size)
    asof = [_asof(settings, rows) for _ in range(repeats)]
    asof_s = float(np.median([t for t, _ in asof]))
    duck = [_join(settings, "duckdb", rows) for _ in range(repeats)]
    duck_s = float(np.median([t for t, _ in duck]))
    assert all(n == len(rows) for _, n in duck)
    duck_rps = len(rows) / duck_s
    result: dict[str, Any] = {
        "benchmark": "pit", "size": size, "repeats": repeats, "feature_service": settings.training.feature_service,
        "asof_rows_per_s": round(len(rows) / asof_s), "asof_seconds": round(asof_s, 2),
        "asof_vs_feast_duckdb": round(duck_s / asof_s, 1),
        "duckdb_rows": len(rows), "duckdb_seconds": round(duck_s, 2), "duckdb_rows_per_s": round(duck_rps),
        "baseline": "feast file offline store (dask)", "spark": "not measured (no Spark offline store configured)",
    }
    file_rows = rows.head(min(size, file_cap))
    try:
        file = [_join(settings, "file", file_rows) for _ in range(repeats)]
    except Exception as exc:  # noqa: BLE001 - the baseline failing is a result to report, not a crash
        result.update(file_error=f"{type(exc).__name__}: {exc}"[:300], ratio=None)
        return result
    file_s = float(np.median([t for t, _ in file]))
    file_rps = len(file_rows) / file_s
    result.update(file_rows=len(file_rows), file_seconds=round(file_s, 2), file_rows_per_s=round(file_rps),
                  ratio=round(duck_rps / file_rps, 1))
    return result
