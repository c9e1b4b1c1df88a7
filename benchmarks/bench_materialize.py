"""Materialization into the online store (Redis by default): rows/s of
``skewless features materialize`` (in-process, every view, unconditional writes) against
the stock ``feast materialize`` CLI (reads each key's stored timestamp before writing) on
the same offline tables, in the same run.

The offline tables come from ``size`` simulated events over ``days`` days (ETL outside
the clock). Each side writes into its own fresh Feast project (its own Redis keys),
torn down afterwards. Rows = entities written (the latest row per entity and view).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from skewless.settings import Settings

START = datetime(2026, 3, 1, tzinfo=timezone.utc)


def _rows(settings: Settings, end: datetime) -> int:
    import duckdb

    from skewless.features.definitions import load
    from skewless.lake_layout import LakeLayout

    layout = LakeLayout.of(settings)
    total = 0
    for v in load(settings).views:
        keys = ", ".join(v.join_keys)
        total += duckdb.sql(f"""SELECT count(*) FROM (SELECT DISTINCT {keys} FROM
            read_parquet('{layout.features_dir(v.name)}/*/*.parquet')
            WHERE event_timestamp < TIMESTAMPTZ '{end.isoformat()}')""").fetchall()[0][0]
    return total


def _project(settings: Settings) -> Settings:
    return settings.model_copy(update={"feast_project": f"bench{uuid.uuid4().hex[:8]}"})


def _teardown(settings: Settings) -> None:
    from skewless.features.store import feature_store

    store = feature_store(settings)
    store._get_provider().teardown_infra(store.project, tables=store.list_feature_views(), entities=store.list_entities())


def run(settings: Settings, size: int = 100_000, days: int = 7, seed: int = 7, **_: Any) -> dict[str, Any]:
    from benchmarks.bench_etl import _land, _private
    from etl.batch import run_batch
    from skewless.features.definitions import load
    from skewless.features.store import apply, materialize, write_cli_config

    base = Path(settings.state_dir) / "bench"
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="mat-", dir=base))
    made: list[Settings] = []
    try:
        lake = _private(settings, root, "m")
        _land(lake, size, seed, START, days)
        definitions = load(lake)
        run_batch(lake, views=definitions.views)
        end = START + timedelta(days=days)
        rows = _rows(lake, end)

        ours = _project(lake)
        made.append(ours)
        apply(ours, definitions)
        t0 = time.perf_counter()
        materialize(ours, end=end)
        ours_s = time.perf_counter() - t0

        cli = _project(lake)
        made.append(cli)
        apply(cli, definitions)
        yaml_path = write_cli_config(cli)
        env = {**os.environ, "SKEWLESS_LAKE_PATH": cli.lake_path}
        cmd = [sys.executable, "-m", "feast.cli.cli", "-c", str(cli.feature_repo_path), "-f", str(yaml_path),
               "materialize", START.isoformat(), end.isoformat()]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        cli_s = time.perf_counter() - t0
        if done.returncode:
            raise RuntimeError(f"feast materialize failed: {done.stderr[-1000:]}")
        # The CLI's own start (interpreter, Feast import, registry): to report a net figure too.
        t0 = time.perf_counter()
        subprocess.run(cmd[:7] + ["entities", "list"], env=env, capture_output=True, text=True, check=True)
        startup_s = time.perf_counter() - t0
    finally:
        for s in made:
            try:
                _teardown(s)
            except Exception:  # noqa: BLE001 - best effort cleanup of the bench projects
                pass
        shutil.rmtree(root, ignore_errors=True)
    return {
        "benchmark": "materialize", "events": size, "days": days, "online_store": settings.online_store,
        "rows": rows, "seconds": round(ours_s, 2), "rows_per_s": round(rows / ours_s),
        "baseline": "feast materialize (stock CLI, same tables; includes its process start)",
        "baseline_seconds": round(cli_s, 2), "baseline_rows_per_s": round(rows / cli_s),
        "baseline_startup_s": round(startup_s, 2),
        "baseline_net_rows_per_s": round(rows / max(cli_s - startup_s, 1e-3)),
        "ratio": round(cli_s / ours_s, 2),
        "note": "same Feast engine; ours writes each entity's latest row in one Redis pipeline (skip_dedup), "
                "the CLI reads every stored timestamp first; baseline_net excludes the CLI's start",
    }
