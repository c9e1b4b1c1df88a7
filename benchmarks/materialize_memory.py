"""Peak memory of ``skewless features materialize`` on an existing lake's offline tables,
one fresh process per run (its VmHWM), into a private redis-server (no persistence).

    python -m benchmarks.materialize_memory LAKE_DIR END_ISO [--batch-rows N ...] [--code DIR]

``LAKE_DIR`` holds ``features/<view>/`` (e.g. a copy of ``bench scale``'s lake, taken while
it runs); each run applies the definitions into a fresh Feast project (registry under a
temporary state dir) and loads every view in full up to ``END_ISO``. ``--batch-rows``:
the ``materialize.batch_rows`` values to run (in order; ``-``: the default); ``--code DIR``
runs the materialization of another checkout instead (e.g. Feast's one pass before this
change: it has no such setting). Prints one JSON line per run and a last line with all.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, sys, time, uuid
from pathlib import Path
from datetime import datetime
lake, end, batch_rows, state, redis_url = sys.argv[1:6]
from skewless.features.definitions import load
from skewless.features.store import apply, feature_store, materialize
from skewless.settings import Settings
update = {"lake_path": lake, "state_dir": Path(state), "redis_url": redis_url, "online_store": "redis",
          "feast_project": "mm" + uuid.uuid4().hex[:8]}
s = Settings().model_copy(update=update)
if batch_rows != "-" and "materialize" in Settings.model_fields:
    s = s.model_copy(update={"materialize": s.materialize.model_copy(update={"batch_rows": int(batch_rows)})})
store = feature_store(s)
apply(s, load(s), store)
with open("/proc/self/status") as fh:
    before = next(int(l.split()[1]) for l in fh if l.startswith("VmRSS:")) / 1024
load0 = os.getloadavg()[0]
t0 = time.perf_counter()
summary = materialize(s, end=datetime.fromisoformat(end), store=store, full=True)
seconds = time.perf_counter() - t0
with open("/proc/self/status") as fh:
    peak = next(int(l.split()[1]) for l in fh if l.startswith("VmHWM:")) / 1024
print(json.dumps({"seconds": round(seconds, 1), "peak_rss_mb": round(peak), "rss_before_mb": round(before),
                  "keys": sum(summary["keys"].values()),
                  "rows": sum(summary.get("rows", {}).values()) or None,
                  "load_1m": [round(load0, 1), round(os.getloadavg()[0], 1)]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("lake")
    ap.add_argument("end")
    ap.add_argument("--batch-rows", type=str, default="-", help="comma-separated; '-' = the setting's default")
    ap.add_argument("--code", default=str(Path(__file__).resolve().parents[1]))
    a = ap.parse_args()
    from skewless.services.redis_server import PrivateRedis

    root = Path(tempfile.mkdtemp(prefix="matmem-"))
    results = []
    try:
        for rows in a.batch_rows.split(","):
            with PrivateRedis(root / f"redis-{rows}") as server:
                env = {**os.environ, "PYTHONPATH": a.code}
                done = subprocess.run([sys.executable, "-c", CHILD, str(Path(a.lake).resolve()), a.end, rows,
                                       str(root / f"state-{rows}"), server.url],
                                      env=env, cwd=a.code, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"materialize failed: {done.stderr[-2000:]}")
                r = {"code": a.code, "batch_rows": rows, **json.loads(done.stdout.strip().splitlines()[-1]),
                     "redis_used_memory_mb": server.used_memory_mb()}
            print(json.dumps(r), flush=True)
            results.append(r)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
