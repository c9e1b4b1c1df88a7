"""``Processor.apply`` in-process at a steady rate (no Spark, no Kafka): where a micro-batch's
time goes. A private ``redis-server`` (the project's AOF flags), the real Feast registry and
online writer, every view of ``feature_repo``. Transactions shaped as ``bench freshness``
sends them (10,000 users, 1,000 merchants, ``event_time`` = send time) are cut into batches
of ``rate * period`` records; batch ``i`` covers simulated time ``[t0 + i*period, t0 + (i+1)*period)``
and is applied at the clock ``end + lag_s`` (a job keeping up); between batches the
publisher runs at every hop boundary passed (the job's main loop). After ``warm_s`` of
simulated time, phases are measured over ``measure_s`` (medians, p99) and optionally profiled.

    python -m benchmarks.proc_profile --rate 1000 --period 0.5 --measure 30 [--profile out.prof]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
import pandas as pd


def _records(topic: str, rng, n: int, t_lo: float, t_hi: float, start: int, users: int, merchants: int) -> pd.DataFrame:
    ts = np.sort(rng.uniform(t_lo, t_hi, n))
    us = rng.integers(0, users, n)
    ms = rng.integers(0, merchants, n)
    amounts = np.round(rng.lognormal(3.3, 0.7, n), 2).clip(0.01, 50_000)
    values = []
    for j in range(n):
        t = pd.Timestamp(int(ts[j] * 1e6), unit="us", tz="UTC")
        values.append(orjson.dumps({
            "schema_version": 2, "transaction_id": f"t{start + j}", "user_id": f"u{us[j]:06d}",
            "merchant_id": f"m{ms[j]:05d}", "amount": float(amounts[j]), "currency": "EUR", "country": "FR",
            "channel": "web", "device_id": f"d-u{us[j]:06d}", "event_time": t.isoformat().replace("+00:00", "Z"),
            "mcc": "5411"}))
    return pd.DataFrame({"topic": topic, "partition": 0, "offset": np.arange(start, start + n),
                         "key": [f"u{u:06d}".encode() for u in us], "value": values,
                         "timestamp": pd.to_datetime((ts * 1e6).astype("int64"), unit="us", utc=True)})


def _profiler(args) -> cProfile.Profile | None:
    if not args.profile:
        return None
    return cProfile.Profile(time.process_time) if args.profile_clock == "cpu" else cProfile.Profile()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--period", type=float, default=0.5)
    ap.add_argument("--warm", type=float, default=10)
    ap.add_argument("--measure", type=float, default=30)
    ap.add_argument("--lag", type=float, default=0.05)
    ap.add_argument("--phase", type=float, default=0.1, help="batches start this long after a whole second")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--profile-clock", choices=("wall", "cpu"), default="wall",
                    help="cProfile's clock: wall time, or this process's CPU time (not the waits for Redis)")
    ap.add_argument("--catchup", type=int, default=0, help="instead: one backlog of N events over a day, in batches")
    ap.add_argument("--batch", type=int, default=200_000)
    ap.add_argument("--no-freeze", action="store_true")
    args = ap.parse_args()

    import redis

    from etl.online_writer import OnlineWriter
    from etl.stream import Processor
    from etl.stream_state import StreamState
    from skewless.features import store as feast_store
    from skewless.features.definitions import load
    from skewless.services import redis_server
    from skewless.services.server_process import free_port
    from skewless.settings import load_settings

    settings = load_settings()
    tmp = Path(tempfile.mkdtemp(prefix="procprof-"))
    port = free_port()
    own = settings.model_copy(update={"state_dir": tmp / "redis",
                                      "services": settings.services.model_copy(update={"redis_port": port})})
    redis_server.up(own)
    try:
        work = settings.model_copy(update={"state_dir": tmp / "state", "online_store": "redis",
                                           "redis_url": f"redis://127.0.0.1:{port}/0", "redis_password": None,
                                           "feast_project": f"pp{uuid.uuid4().hex[:6]}"})
        defs = load(work)
        feast_store.apply(work, defs)
        writer = OnlineWriter(work)
        client = redis.Redis.from_url(work.redis_url)
        state = StreamState(client, work.feast_project)
        clock = {"now": 0.0}
        proc = Processor(work, defs.views, state, writer, clock=lambda: clock["now"])
        rng = np.random.default_rng(7)
        topic = work.topics.transactions
        hop_min = min(v.hop_td.total_seconds() for v in defs.views)
        reports = []
        idle = []
        if args.catchup:
            recs = _records(topic, rng, args.catchup, time.time() - 86400, time.time() - 1, 0, 5000, 1000)
            prof = _profiler(args)
            t = time.perf_counter()
            for i in range(0, len(recs), args.batch):
                clock["now"] = time.time()
                if prof:
                    prof.enable()
                rep = proc.apply(recs.iloc[i:i + args.batch].reset_index(drop=True), i)
                if prof:
                    prof.disable()
                reports.append(rep)
            total = time.perf_counter() - t
            print(json.dumps({"events": args.catchup, "seconds": round(total, 2),
                              "events_per_s": round(args.catchup / total),
                              "phases": [{k: round(getattr(r, k), 3) for k in
                                          ("parse_s", "compute_s", "commit_s", "publish_s", "seconds")} for r in reports],
                              "rows_published": sum(r.rows_published for r in reports)}))
            if prof:
                prof.dump_stats(args.profile)
            return
        # Simulated past, so times are real-ish; batches start ``--phase`` s after a whole second:
        # where a batch's end falls between hop boundaries decides how many of its rows the
        # batch itself publishes and how many wait for the idle publisher, so runs compare.
        t0 = float(int(time.time() - args.warm - args.measure - 120)) + args.phase
        n_batches = int((args.warm + args.measure) / args.period)
        per = int(args.rate * args.period)
        prof = _profiler(args)
        offset = 0
        cpu = [0.0]
        for i in range(n_batches):
            lo, hi = t0 + i * args.period, t0 + (i + 1) * args.period
            recs = _records(topic, rng, per, lo, hi, offset, 10_000, 1_000)
            offset += per
            # the main loop: publish at every boundary passed since the last batch
            b = float((np.floor(lo / hop_min) + 1) * hop_min)
            measured = i * args.period >= args.warm
            while b < hi + args.lag:
                ti, ci = time.perf_counter(), time.process_time()
                if prof and measured:
                    prof.enable()
                n = proc.publisher.publish_due(b + 1e-6)
                if prof and measured:
                    prof.disable()
                if measured:
                    idle.append((time.perf_counter() - ti, n))
                    cpu[0] += time.process_time() - ci
                b += hop_min
            clock["now"] = hi + args.lag
            if prof and measured:
                prof.enable()
            ci = time.process_time()
            rep = proc.apply(recs, i)
            if measured:
                cpu[0] += time.process_time() - ci
            if prof and measured:
                prof.disable()
            if measured:
                reports.append(rep)
            if i == 0 and not args.no_freeze:
                from etl.stream import settle_gc

                settle_gc()  # as run_stream does after its first batch
        out = {"rate": args.rate, "period": args.period, "batches": len(reports), "events_per_batch": per}
        for k in ("parse_s", "compute_s", "commit_s", "publish_s", "seconds"):
            v = sorted(getattr(r, k) for r in reports)
            out[k] = {"p50": round(statistics.median(v), 4), "p90": round(v[int(0.9 * len(v))], 4),
                      "max": round(v[-1], 4)}
        out["rows_published_per_batch"] = statistics.median(r.rows_published for r in reports)
        iv = sorted(x[0] for x in idle)
        out["idle_publish"] = {"calls": len(iv), "p50": round(statistics.median(iv), 4) if iv else None,
                               "max": round(iv[-1], 4) if iv else None, "rows": sum(x[1] for x in idle)}
        out["cpu_per_event_ms"] = round((sum(r.seconds for r in reports) + sum(iv)) / (len(reports) * per) * 1e3, 3)
        out["process_cpu_per_event_ms"] = round(cpu[0] / (len(reports) * per) * 1e3, 3)
        out["load"] = os.getloadavg()[0]
        print(json.dumps(out))
        if prof:
            prof.dump_stats(args.profile)
    finally:
        redis_server.down(own)


if __name__ == "__main__":
    main()
