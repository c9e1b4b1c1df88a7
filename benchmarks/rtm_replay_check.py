"""What a real-time-mode query replays after ``kill -9``, seen from a Python ``ForeachWriter``.

    python -m benchmarks.rtm_replay_check [--trigger "5 seconds"] [--kill-after 12] [--json]

A child process runs ``spark.readStream.format("kafka")`` (a fresh 2-partition topic) ->
``select(partition, offset)`` -> ``writeStream.foreach(writer).trigger(realTime=...)`` on our
session (``skewless.spark.spark_session``, ``local[2]``: one task slot per partition). The
writer appends ``open``/``row``/``close`` lines with (partition, epoch, offset, time) to a file
per process life. This process sends 100 records/s; after ``--kill-after`` seconds the child's
whole process group (driver, JVM, Python workers) gets SIGKILL, mid-epoch; a second child
starts on the same checkpoint and runs until every record sent has been processed again or
``--settle`` seconds pass. Printed: per (partition, epoch) of each life the offsets processed,
the offsets processed in both lives (replays), offsets never processed (losses), and the
checkpoint's offset/commit logs — what an idempotent writer keyed by Kafka offsets must absorb.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any


class _Writer:
    def __init__(self, path: str):
        self.path = path

    def open(self, partition_id, epoch_id):  # noqa: A003 - Spark's name
        self.f = open(self.path, "a")
        self.p, self.e = partition_id, epoch_id
        self.f.write(f"open {partition_id} {epoch_id} {time.time():.6f}\n")
        self.f.flush()
        return True

    def process(self, row):
        self.f.write(f"row {self.p} {self.e} {row.partition} {row.offset} {time.time():.6f}\n")
        self.f.flush()

    def close(self, error):
        self.f.write(f"close {self.p} {self.e} {time.time():.6f} {'error' if error else 'ok'}\n")
        self.f.close()


def consumer(spec: dict[str, Any]) -> None:
    from skewless.settings import load_settings
    from skewless.spark import spark_session

    spark = spark_session(load_settings(), "local[2]", app="rtm-replay", kafka=True)
    spark.conf.set("spark.sql.streaming.realTimeMode.minBatchDuration", "1000")
    src = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", spec["bootstrap"])
           .option("subscribe", spec["topic"]).option("startingOffsets", "earliest").load()
           .select("partition", "offset"))
    q = (src.writeStream.foreach(_Writer(spec["log"])).outputMode("update")
         .option("checkpointLocation", spec["checkpoint"]).trigger(realTime=spec["trigger"]).start())
    print("@@started", flush=True)
    q.awaitTermination()


def _read(log: Path) -> dict[str, Any]:
    rows: dict[tuple[int, int], list[tuple[int, float]]] = {}
    epochs: dict[tuple[int, int], dict[str, Any]] = {}
    if not log.exists():
        return {"rows": rows, "epochs": epochs}
    for line in log.read_text().splitlines():
        p = line.split()
        if p[0] == "open":
            epochs.setdefault((int(p[1]), int(p[2])), {"open": float(p[3]), "offsets": []})
        elif p[0] == "row":
            key = (int(p[3]), int(p[4]))
            rows.setdefault(key, []).append((int(p[2]), float(p[5])))
            epochs.setdefault((int(p[1]), int(p[2])), {"offsets": []})["offsets"].append(int(p[4]))
        elif p[0] == "close":
            epochs.setdefault((int(p[1]), int(p[2])), {"offsets": []})["close"] = p[4]
    return {"rows": rows, "epochs": epochs}


def _ranges(offsets: list[int]) -> str:
    if not offsets:
        return "-"
    s = sorted(offsets)
    return f"{s[0]}..{s[-1]} ({len(s)})"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--consumer"]:
        consumer(json.loads(argv[1]))
        return 0
    ap = argparse.ArgumentParser(prog="python -m benchmarks.rtm_replay_check")
    ap.add_argument("--trigger", default="5 seconds")
    ap.add_argument("--kill-after", type=float, default=12.0, help="seconds of sending before SIGKILL")
    ap.add_argument("--settle", type=float, default=60.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    from skewless.settings import load_settings

    bootstrap = load_settings().kafka.bootstrap_servers
    topic = f"bench-rtm-replay-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 2, 1)])
    work = Path(tempfile.mkdtemp(prefix="rtm-replay-"))
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    sent: dict[int, int] = {0: 0, 1: 0}
    result: dict[str, Any] = {"topic": topic, "trigger": args.trigger}
    try:
        lives = []
        for life in (1, 2):
            spec = {"bootstrap": ",".join(bootstrap), "topic": topic, "checkpoint": str(work / "checkpoint"),
                    "log": str(work / f"life{life}.log"), "trigger": args.trigger}
            err = open(work / f"life{life}.stderr", "wb")
            proc = subprocess.Popen([sys.executable, "-m", "benchmarks.rtm_replay_check", "--consumer",
                                     json.dumps(spec)], stdout=subprocess.PIPE, stderr=err, text=True,
                                    start_new_session=True)
            while True:
                line = proc.stdout.readline()
                if not line or line.startswith("@@started"):
                    break
            t_end = time.time() + (args.kill_after if life == 1 else args.settle)
            i = 0
            while time.time() < t_end:
                if life == 1 or time.time() < t_end - args.settle + 5:  # life 2: 5 s more records, then settle
                    part = i % 2
                    md = producer.send(topic, b"x", partition=part).get(10)
                    sent[part] = max(sent[part], md.offset + 1)
                    i += 1
                    time.sleep(0.01)
                else:
                    seen = _read(work / f"life{life}.log")["rows"]
                    if all(all((p, o) in seen for o in range(n)) for p, n in sent.items()):
                        break
                    time.sleep(0.5)
            killed_at = time.time()
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            err.close()
            lives.append((killed_at, _read(work / f"life{life}.log")))
        (k1, a), (_k2, b) = lives
        both = sorted(k for k in a["rows"] if k in b["rows"])
        lost = [(p, o) for p, n in sent.items() for o in range(n) if (p, o) not in a["rows"] and (p, o) not in b["rows"]]
        ck = work / "checkpoint"
        logs = {}
        for d in ("offsets", "commits"):
            logs[d] = {f.name: f.read_text().strip().splitlines()[-1]
                       for f in sorted((ck / d).iterdir(), key=lambda f: int(f.name) if f.name.isdigit() else -1)
                       if f.name.isdigit()} if (ck / d).exists() else {}
        result.update({
            "sent": sent,
            "life1_epochs": {f"p{p}/e{e}": {"offsets": _ranges(v["offsets"]), "closed": v.get("close", "no")}
                             for (p, e), v in sorted(a["epochs"].items())},
            "life2_epochs": {f"p{p}/e{e}": {"offsets": _ranges(v["offsets"]), "closed": v.get("close", "no")}
                             for (p, e), v in sorted(b["epochs"].items())},
            "replayed": len(both),
            "replayed_by_partition": {p: _ranges([o for (q, o) in both if q == p]) for p in (0, 1)},
            "replayed_epoch_pairs": sorted({(a["rows"][k][0][0], b["rows"][k][0][0]) for k in both}),
            "processed_after_kill_in_life1": sum(1 for v in a["rows"].values() if v[0][1] > k1),
            "lost": len(lost),
            "checkpoint_offsets": logs.get("offsets"), "checkpoint_commits": sorted(logs.get("commits", {})),
        })
    finally:
        producer.close(5)
        try:
            admin.delete_topics([topic])
        except Exception:  # noqa: BLE001
            result["topic_left"] = topic
        admin.close()
        shutil.rmtree(work, ignore_errors=True)
    for k, v in result.items():
        print(f"{k}: {v}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
