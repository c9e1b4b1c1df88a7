"""Online serving: ``skewless serve`` against Feast's own feature server (``feast serve``,
the baseline), in the same run, on the same machine, Redis, FeatureService and entities.

Both servers are started here as child processes on free ports with the same number of
worker processes, and always stopped at the end. Before any timing, both must answer 200
and agree value for value on the same entity rows (a mismatch raises). Then one load
generator, wrk (``benchmarks/wrk/post_bodies.lua``, requests rotating over entity rows
sampled from the lake), measures each scenario on each server, alternating the servers:

* ``features_1``   ``POST /v1/features`` with 1 entity row (Feast: ``/get-online-features``);
* ``features_100`` the same with 100 entity rows per request;
* ``predict``      ``POST /v1/predict`` with one transaction (ours only: Feast has no
  prediction endpoint; its ``features_1`` figures are quoted as the nearest baseline);

each under ``connections`` concurrent connections (default 8) and sequentially (one
connection, one request at a time). Figures are medians over ``repeats`` runs of
``duration`` seconds: requests/s, p50 and p99 latency (ms), non-2xx responses and socket
errors (summed), and ratios ours/feast. The machine is shared: the 1-minute load average
is recorded with the figures.

Feast runs as ``feast serve --no-access-log --max-requests 0`` by default: no access log
(ours has none) and no gunicorn worker recycling (Feast's default restarts its worker every
~1,000 requests, a pause that would only flatter ours); ``feast_max_requests=1000`` gives
the stock behaviour. Our predictions are logged to a throwaway topic, deleted afterwards.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from skewless.services.server_process import ServerProcess, free_port, http_json
from skewless.settings import Settings

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "post_bodies.lua"
SCENARIOS = ("features_1", "features_100", "predict")
BATCH = 100
TARGETS = {"throughput_ratio_c8": 3.0, "p99_ms_features_1_c8": 10.0, "p50_ms_features_1_seq": 1.0}


# -- entities -------------------------------------------------------------------------------
def _transactions(settings: Settings, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` transactions sampled from the lake, as the API takes them (the event contract)."""
    import numpy as np

    from serving.schemas import Transaction
    from skewless.contracts import TRANSACTIONS
    from skewless.lake import read_events

    names = [f.name for f in TRANSACTIONS.fields]
    table = read_events(settings.lake_path, settings.topics.transactions, "event_time", columns=names)
    if table.num_rows == 0:
        raise RuntimeError(f"no transactions in the lake at {settings.lake_path} (topic "
                           f"{settings.topics.transactions}): land and materialize some first")
    rng = np.random.default_rng(seed)
    pick = rng.choice(table.num_rows, size=min(n, table.num_rows), replace=False)
    out = []
    for row in table.take(pick).to_pylist():
        tx = {k: v for k, v in row.items() if k in names and v is not None}
        tx["event_time"] = row["event_time"].isoformat().replace("+00:00", "Z")
        tx["amount"] = float(tx["amount"])
        Transaction.model_validate(tx)  # the lake holds valid events; fail here, not in wrk
        out.append(tx)
    return out


def _request_inputs(settings: Settings) -> tuple:
    """The champion FeatureService's request inputs, as declared in Feast's registry."""
    from skewless.features.feast_objects import service_request_inputs
    from skewless.features.store import feature_store

    return service_request_inputs(feature_store(settings), settings.training.feature_service)


def _entity(tx: dict[str, Any], inputs: tuple) -> dict[str, Any]:
    """The entity row of a transaction: its keys and its request inputs, derived as /v1/predict does."""
    from datetime import datetime

    from skewless.features.request_inputs import derive

    event = {**tx, "event_time": datetime.fromisoformat(tx["event_time"])}
    return {"user_id": tx["user_id"], "merchant_id": tx["merchant_id"], **derive(inputs, event)}


def _ours_body(service: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"feature_service": service, "entities": rows}


def _feast_body(service: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"feature_service": service, "full_feature_names": True,
            "entities": {k: [r[k] for r in rows] for k in rows[0]}}


def _write_lines(path: Path, bodies: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(b, separators=(",", ":")) + "\n" for b in bodies))
    return path


# -- servers --------------------------------------------------------------------------------
def _feast_yaml(settings: Settings, root: Path) -> Path:
    """A feature_store.yaml for the stock CLI from ``settings``, written under ``root`` (the
    state dir is only read: registry and online store stay where the settings say)."""
    import yaml

    from skewless.features.store import write_cli_config

    path = write_cli_config(settings.model_copy(update={"state_dir": root}))
    data = yaml.safe_load(path.read_text())
    data["registry"]["path"] = str(Path(settings.state_dir) / "feast" / "registry.db")
    if data["online_store"].get("path"):
        data["online_store"]["path"] = str(Path(settings.state_dir) / "feast" / "online.db")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _child_env(settings: Settings, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           # importing feast sets these in this process; a server started from a shell would not have them
           if k not in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")}
    root = str(Path(settings.feature_repo_path).resolve().parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return {**env, **extra}


# -- correctness before timing --------------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) or (math.isnan(a) and math.isnan(b))
    return a == b


def _verify(ours: ServerProcess, feast: ServerProcess, service: str, rows: list[dict[str, Any]],
            txs: list[dict[str, Any]]) -> dict[str, Any]:
    """Both answer 200 and the same value for every feature of the same rows; else raise."""
    compared = 0
    for batch in ([rows[0]], rows[:20]):
        s1, a = http_json("POST", ours.base + "/v1/features", _ours_body(service, batch))
        s2, b = http_json("POST", feast.base + "/get-online-features", _feast_body(service, batch))
        if s1 != 200 or s2 != 200:
            raise RuntimeError(f"before timing: ours answered {s1} ({str(a)[:300]}), feast answered {s2} "
                               f"({str(b)[:300]})")
        cols = {name: res["values"] for name, res in zip(b["metadata"]["feature_names"], b["results"])}
        missing = [n for n in a["features"] if n not in cols]
        if missing:
            raise RuntimeError(f"feast does not answer features {missing} that ours does")
        bad = []
        for r, row in enumerate(a["results"]):
            for name, value in zip(a["features"], row["values"]):
                compared += 1
                if not _same(value, cols[name][r]):
                    bad.append(f"{batch[r]['user_id']}/{batch[r]['merchant_id']} {name}: ours {value!r}, "
                               f"feast {cols[name][r]!r}")
        if bad:
            raise RuntimeError(f"ours and feast disagree on {len(bad)} of {compared} values: " + "; ".join(bad[:10]))
    # /v1/predict scores with the same values Feast gives for the transaction's entities.
    s1, p = http_json("POST", ours.base + "/v1/predict?include_features=true", txs[0])
    s2, b = http_json("POST", feast.base + "/get-online-features", _feast_body(service, [rows[0]]))
    if s1 != 200 or s2 != 200:
        raise RuntimeError(f"before timing: /v1/predict answered {s1} ({str(p)[:300]}), feast {s2}")
    cols = {name: res["values"][0] for name, res in zip(b["metadata"]["feature_names"], b["results"])}
    shared = [n for n in (p.get("features") or {}) if n in cols]
    bad = [f"{n}: predict {p['features'][n]!r}, feast {cols[n]!r}"
           for n in shared if not _same(p["features"][n], cols[n])]
    if bad:
        raise RuntimeError("the vector /v1/predict scored differs from feast's values: " + "; ".join(bad[:10]))
    return {"verified_values": compared + len(shared), "verified_rows": len(rows[:20]) + 1 + bool(shared)}


def _scoring_per_row(settings: Settings, ours: ServerProcess, txs: list[dict[str, Any]], n: int,
                     passes: int) -> dict[str, Any]:
    """Per-row scoring time of the champion: scikit-learn's ``predict_proba`` (on one thread,
    as the server calls it) against the compiled scorer, on the vectors ``/v1/predict``
    scored for ``n`` transactions, one row per call, ``passes`` times over them (medians,
    in microseconds); and the largest differences: compiled vs scikit-learn here, and the
    server's score vs scikit-learn on the vector it returned."""
    import time

    import numpy as np
    from threadpoolctl import ThreadpoolController

    from serving.scorer import build_scorer
    from skewless.registry import load_champion

    art = load_champion(settings)
    served, vectors = [], []
    for tx in txs[:n]:
        status, body = http_json("POST", ours.base + "/v1/predict?include_features=true", tx)
        if status != 200:
            raise RuntimeError(f"/v1/predict answered {status}: {str(body)[:300]}")
        if body["model_version"] != art.version:
            raise RuntimeError(f"the server scores v{body['model_version']}, the registry's champion is v{art.version}")
        served.append(body["score"])
        vectors.append([np.nan if body["features"][f] is None else float(body["features"][f]) for f in art.features])
    X = np.array(vectors, dtype="float64")
    t0 = time.perf_counter()
    scorer = build_scorer(art.pipeline)
    build_ms = (time.perf_counter() - t0) * 1000
    model = art.pipeline
    model.predict_proba(X[:1])  # loads the OpenMP runtime, so the limit below reaches it
    limit = ThreadpoolController()
    rows = [X[i:i + 1] for i in range(len(X))]
    sk_us, fast_us, sk_scores, fast_scores = [], [], [], []
    for _ in range(passes):
        with limit.limit(limits=1):
            for r in rows:
                t = time.perf_counter()
                p = model.predict_proba(r)[0, 1]
                sk_us.append((time.perf_counter() - t) * 1e6)
                sk_scores.append(p)
        for r in rows:
            t = time.perf_counter()
            p = scorer(r)[0]
            fast_us.append((time.perf_counter() - t) * 1e6)
            fast_scores.append(p)
    sk_a, fast_a = np.array(sk_scores), np.array(fast_scores)
    want = sk_a[:len(rows)]
    sk_p50, fast_p50 = statistics.median(sk_us), statistics.median(fast_us)
    return {
        "scoring_rows": len(rows), "scoring_calls_each": len(sk_us), "scorer_build_ms": round(build_ms, 1),
        "scoring_sklearn_us_p50": round(sk_p50, 1), "scoring_compiled_us_p50": round(fast_p50, 1),
        "scoring_sklearn_us_p90": round(float(np.percentile(sk_us, 90)), 1),
        "scoring_compiled_us_p90": round(float(np.percentile(fast_us, 90)), 1),
        "scoring_speedup_p50": round(sk_p50 / fast_p50, 1),
        "scoring_max_abs_diff_compiled_vs_sklearn": float(np.max(np.abs(fast_a - sk_a))),
        "scoring_max_abs_diff_served_vs_sklearn": float(np.max(np.abs(np.array(served) - want))),
    }


# -- load -----------------------------------------------------------------------------------
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")


def _wrk(url: str, bodies: Path, connections: int, duration: float) -> dict[str, Any]:
    threads = min(2, connections)
    cmd = [shutil.which("wrk") or "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
           "--latency", "--timeout", "5s", "-s", str(WRK_SCRIPT), url, "--", str(bodies)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if done.returncode or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-1000:]} {done.stdout[-1000:]}")
    fig = json.loads(line[len("WRKJSON "):])
    text = _NON2XX.search(done.stdout)
    fig["non2xx"] = max(fig["non2xx"], int(text.group(1)) if text else 0)
    fig["socket_errors"] = sum(fig[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    fig["rps"] = fig["requests"] / (fig["duration_us"] / 1e6)
    fig["load_1m"] = os.getloadavg()[0]
    return fig


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _summary(prefix: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        f"{prefix}_rps": round(_median(runs, "rps")),
        f"{prefix}_p50_ms": round(_median(runs, "p50_us") / 1000, 3),
        f"{prefix}_p99_ms": round(_median(runs, "p99_us") / 1000, 3),
        f"{prefix}_non2xx": sum(r["non2xx"] for r in runs),
        f"{prefix}_socket_errors": sum(r["socket_errors"] for r in runs),
        f"{prefix}_runs_rps": " ".join(str(round(r["rps"])) for r in runs),
    }


def run(settings: Settings, size: int = 100_000, repeats: int = 3, duration: float = 10.0, connections: int = 8,
        workers: int = 1, warmup: float = 2.0, feast_max_requests: int = 0, seed: int = 7,
        ready_timeout: float = 180.0, ours_env: dict[str, str] | None = None, scorer_baseline: bool = True,
        scoring_rows: int = 300, scoring_passes: int = 5, **_: Any) -> dict[str, Any]:
    """``size`` transactions are sampled from the lake (at most the lake's count); requests
    rotate over them (``features_100`` over consecutive groups of 100). ``ours_env``: extra
    environment for our server only (a diagnosis, e.g. ``{"OMP_NUM_THREADS": "1"}``; it is
    reported with the figures). ``scorer_baseline``: also run ``predict`` on a third server,
    ours with ``serving.compiled_scorer`` off (scikit-learn's ``predict_proba``, as before
    the compiled scorer). ``scoring_rows`` vectors that ``/v1/predict`` scored are scored
    again in this process, one row per call, ``scoring_passes`` times, by both scorers
    (``_scoring_per_row``)."""
    if shutil.which("wrk") is None:
        from skewless.errors import MissingDependencyError

        raise MissingDependencyError("wrk (the load generator)", "apt-get install -y wrk")
    load_start = os.getloadavg()
    txs = _transactions(settings, size, seed)
    inputs = _request_inputs(settings)
    rows = [_entity(t, inputs) for t in txs]
    batches = [rows[i:i + BATCH] for i in range(0, len(rows) - BATCH + 1, BATCH)] or [(rows * BATCH)[:BATCH]]

    root = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    topic = f"bench_predictions_{uuid.uuid4().hex[:8]}"
    servers: list[ServerProcess] = []
    repo_root = Path(settings.feature_repo_path).resolve().parent
    try:
        ours_port, feast_port = free_port(), free_port()
        ours_cmd = [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(ours_port),
                    "--workers", str(workers)]
        if settings.config_file:
            ours_cmd += ["--config", str(settings.config_file)]
        ours = ServerProcess("skewless serve", ours_cmd,
                       _child_env(settings, {**(ours_env or {}), "SKEWLESS_TOPICS__PREDICTIONS": topic}),
                       repo_root, root / "ours.log", ours_port)
        servers.append(ours)
        feast_cmd = [sys.executable, "-m", "feast.cli.cli", "-c", str(settings.feature_repo_path), "-f",
                     str(_feast_yaml(settings, root / "feast_state")), "serve", "-h", "127.0.0.1", "-p",
                     str(feast_port), "--workers", str(workers), "--no-access-log",
                     "--max-requests", str(feast_max_requests)]
        feast = ServerProcess("feast serve", feast_cmd, _child_env(settings, {}), repo_root, root / "feast.log", feast_port)
        servers.append(feast)
        sk = None
        if scorer_baseline:  # ours again, scoring with scikit-learn's predict_proba: the scorer's baseline
            sk_port = free_port()
            sk_cmd = [*ours_cmd[:ours_cmd.index("--port") + 1], str(sk_port), *ours_cmd[ours_cmd.index("--port") + 2:]]
            sk = ServerProcess("skewless serve (scikit-learn scorer)", sk_cmd,
                               _child_env(settings, {**(ours_env or {}), "SKEWLESS_TOPICS__PREDICTIONS": topic,
                                                     "SKEWLESS_SERVING__COMPILED_SCORER": "false"}),
                               repo_root, root / "ours_sklearn.log", sk_port)
            servers.append(sk)
        ready = ours.wait_ready("/readyz", ready_timeout)
        feast.wait_ready("/health", ready_timeout)
        service = (ready.get("model") or {}).get("feature_service")
        if not service:
            raise RuntimeError(f"ours is ready but names no champion FeatureService: {ready}")
        verified = _verify(ours, feast, service, rows, txs)
        if sk is not None:
            sk.wait_ready("/readyz", ready_timeout)
        scoring = _scoring_per_row(settings, ours, txs, scoring_rows, scoring_passes)
        scoring["scorer"] = (ready.get("model") or {}).get("scorer", "?")

        files = {
            ("ours", "features_1"): _write_lines(root / "ours_1.jsonl", [_ours_body(service, [r]) for r in rows]),
            ("ours", "features_100"): _write_lines(root / "ours_100.jsonl", [_ours_body(service, b) for b in batches]),
            ("ours", "predict"): _write_lines(root / "ours_predict.jsonl", txs),
            ("feast", "features_1"): _write_lines(root / "feast_1.jsonl", [_feast_body(service, [r]) for r in rows]),
            ("feast", "features_100"): _write_lines(root / "feast_100.jsonl",
                                                    [_feast_body(service, b) for b in batches]),
        }
        urls = {("ours", "features_1"): ours.base + "/v1/features",
                ("ours", "features_100"): ours.base + "/v1/features", ("ours", "predict"): ours.base + "/v1/predict",
                ("feast", "features_1"): feast.base + "/get-online-features",
                ("feast", "features_100"): feast.base + "/get-online-features"}
        if sk is not None:
            files[("sklearn", "predict")] = files[("ours", "predict")]
            urls[("sklearn", "predict")] = sk.base + "/v1/predict"
        modes = {f"c{connections}": connections, "seq": 1}
        if warmup > 0:  # caches, registry, connection pools, the prediction log's producer
            for key in files:
                _wrk(urls[key], files[key], connections, warmup)
        runs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for rep in range(repeats):
            for scenario in SCENARIOS:
                for mode, conns in modes.items():
                    sides = ("ours", "feast", "sklearn") if rep % 2 == 0 else ("sklearn", "feast", "ours")
                    for side in sides:
                        if (side, scenario) in files:
                            fig = _wrk(urls[(side, scenario)], files[(side, scenario)], conns, duration)
                            runs.setdefault((side, scenario, mode), []).append(fig)
        for s in servers:
            if s.proc.poll() is not None:
                raise RuntimeError(f"{s.name} died during the benchmark:\n{s.log_tail()}")
    finally:
        for s in servers:
            s.stop()
        _drop_topic(settings, topic)
        shutil.rmtree(root, ignore_errors=True)

    result: dict[str, Any] = {
        "benchmark": "serving", "workers": workers, "connections": connections, "duration_s": duration,
        "repeats": repeats, "entity_rows": len(rows), "feature_service": service, **verified,
        "baseline": f"feast serve --workers {workers} --no-access-log --max-requests {feast_max_requests} "
                    f"(POST /get-online-features; Feast has no predict: its features_1 is predict's baseline)",
        "ours_env": " ".join(f"{k}={v}" for k, v in (ours_env or {}).items()) or "(as shipped)",
        "serving_code": _code_state(repo_root), "cpus": os.cpu_count(),
        "load_avg_1m_at_start": round(load_start[0], 2), **scoring,
    }
    for (side, scenario, mode), rs in sorted(runs.items()):
        result.update(_summary(f"{side}_{scenario}_{mode}", rs))
    for scenario in SCENARIOS:
        for mode in modes:
            o = result.get(f"ours_{scenario}_{mode}_rps")
            base = "features_1" if scenario == "predict" else scenario
            f = result.get(f"feast_{base}_{mode}_rps")
            if o is None or not f:
                continue
            result[f"ratio_{scenario}_{mode}_rps"] = round(o / f, 2)
            for q in ("p50", "p99"):
                result[f"ratio_{scenario}_{mode}_{q}"] = round(
                    result[f"ours_{scenario}_{mode}_{q}_ms"] / result[f"feast_{base}_{mode}_{q}_ms"], 3)
    for mode in modes:  # the scorer's effect end to end: ours (compiled) against ours with scikit-learn
        sk_rps = result.get(f"sklearn_predict_{mode}_rps")
        if sk_rps:
            result[f"ratio_predict_sklearn_{mode}_rps"] = round(sk_rps / result[f"feast_features_1_{mode}_rps"], 2)
            result[f"speedup_predict_compiled_vs_sklearn_{mode}_rps"] = round(
                result[f"ours_predict_{mode}_rps"] / sk_rps, 2)
    c = f"c{connections}"
    missed = [s for s in SCENARIOS if result.get(f"ratio_{s}_{c}_rps", 0) < TARGETS["throughput_ratio_c8"]]
    result["target_throughput_3x_met"] = not missed
    result["target_throughput_3x_missed_by"] = ", ".join(missed) or "-"
    result["target_p99_10ms_features_1_met"] = result[f"ours_features_1_{c}_p99_ms"] <= TARGETS["p99_ms_features_1_c8"]
    result["target_seq_p50_1ms_met"] = result["ours_features_1_seq_p50_ms"] <= TARGETS["p50_ms_features_1_seq"]
    all_runs = [r for rs in runs.values() for r in rs]
    result["load_avg_1m_median_during"] = round(_median(all_runs, "load_1m"), 2)
    result["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    result["non2xx_total"] = sum(r["non2xx"] for r in all_runs)
    result["socket_errors_total"] = sum(r["socket_errors"] for r in all_runs)
    return result


def _drop_topic(settings: Settings, topic: str) -> None:
    try:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(**settings.kafka.client_config(), request_timeout_ms=10000)
        try:
            if topic in admin.list_topics():
                admin.delete_topics([topic])
        finally:
            admin.close()
    except Exception:  # noqa: BLE001 - best effort: the topic only holds benchmark predictions
        pass


def _code_state(repo_root: Path) -> str:
    """The commit measured, and whether the serving code had uncommitted edits."""
    try:
        rev = subprocess.run(["git", "-C", str(repo_root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo_root), "status", "--porcelain", "--", "serving", "feature_repo",
                                "cli/serve.py"], capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev or "unknown") + (" + uncommitted serving edits" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
