"""Pipeline benchmark: N batches x n essays with an instant judge, embedded and through Kafka.

    python -m bench.pipeline --batches 200 --essays 30 [--kafka] [--json]

Reports judgements/s, batch wall time p50/p99, the time from the deciding judgement to the
result event p50/p99, open batches held, snapshot bytes per batch and peak memory. With
`--kafka` it also starts a Kafka-protocol broker (the test fixture's), the assessment and
judge flows as processes, and measures the same through Kafka.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.instant_judge import decide
from judges.plugin import PluginJudge
from operators.batch_machine import BatchMachine
from schemas import AssessmentResult, BatchOpened, BatchSettings, ComparisonRequested, EssaySubmitted, Judgement

ROOT = Path(__file__).resolve().parents[1]
JUDGE = "bench.instant_judge:judge"


def batch_events(n_batches: int, n_essays: int, seed: int, settings: BatchSettings, prefix: str = "bench") -> list:
    rng = np.random.default_rng(seed)
    events: list = []
    for b in range(n_batches):
        bid = f"{prefix}-{seed}-{b}"
        events.append(BatchOpened.create(bid, n_essays, settings=settings))
        abilities = rng.normal(0, 2, n_essays)
        events += [
            EssaySubmitted.create(bid, f"e{i:03d}", f"Essay {i} of batch {b}. [q={abilities[i]:.3f}]")
            for i in range(n_essays)
        ]
    return events


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if xs else None


def machine_only(n_batches: int, n_essays: int, settings: BatchSettings) -> dict:
    """The batch state machine alone (no Bytewax, no I/O): its CPU cost per judgement and the
    largest snapshot of a batch."""
    events = batch_events(n_batches, n_essays, 7, settings, prefix="m")
    machines: dict[str, BatchMachine] = {}
    pending: list[ComparisonRequested] = []
    now = datetime.now(UTC)
    for ev in events:
        m = machines.setdefault(ev.batch_id, BatchMachine(ev.batch_id))
        pending += [o for o in m.handle(ev, now) if isinstance(o, ComparisonRequested)]
    judgements = [
        Judgement.for_request(r, winner=decide(r.essay_a.text, r.essay_b.text), provider="bench", model="instant")
        for r in pending
    ]
    snap_max = 0
    handled = 0
    t0 = time.perf_counter()
    while judgements:
        nxt = []
        for j in judgements:
            m = machines[j.batch_id]
            out = m.handle(j, now)
            handled += 1
            for o in out:
                if isinstance(o, ComparisonRequested):
                    nxt.append(
                        Judgement.for_request(o, winner=decide(o.essay_a.text, o.essay_b.text), provider="bench", model="instant")
                    )
            if handled % 997 == 0:
                snap_max = max(snap_max, len(pickle.dumps(m.snapshot())))
        judgements = nxt
    elapsed = time.perf_counter() - t0
    done = sum(1 for m in machines.values() if m.phase == "done")
    return {
        "machine_judgements_per_s": handled / elapsed,
        "machine_batches_done": done,
        "snapshot_bytes_per_batch_max": snap_max,
        "tombstone_bytes": len(pickle.dumps(next(iter(machines.values())).snapshot())),
    }


def single_batch(n_essays: int, repeats: int = 5) -> dict:
    """One batch alone with the default settings (budget 350): wall time, median of runs."""
    from flows.embedded import run_embedded

    walls, valid = [], 0
    for i in range(repeats):
        events = batch_events(1, n_essays, i, BatchSettings(judge_provider=JUDGE), prefix=f"single{i}")
        t0 = time.perf_counter()
        collector = run_embedded(events, PluginJudge(JUDGE))
        walls.append(time.perf_counter() - t0)
        valid = next(iter(collector.results.values())).comparisons_valid
    return {"single_batch_wall_median_s": statistics.median(walls), "single_batch_comparisons": valid}


def embedded(n_batches: int, n_essays: int, settings: BatchSettings) -> dict:
    from flows.embedded import run_embedded

    events = batch_events(n_batches, n_essays, 1, settings)
    finished: dict[str, float] = {}
    lag: list[float] = []
    judged = 0

    def on_judgement(_j: Judgement) -> None:
        nonlocal judged
        judged += 1

    t0 = time.perf_counter()
    collector = run_embedded(events, PluginJudge(JUDGE), on_judgement=on_judgement)
    wall = time.perf_counter() - t0
    for bid, res in collector.results.items():
        finished[bid] = res.duration_s
    lag = collector.result_lag_s
    return {
        "embedded_batches": n_batches,
        "embedded_essays": n_essays,
        "embedded_completed": sum(1 for r in collector.results.values() if r.status.value == "completed"),
        "embedded_judgements": judged,
        "embedded_wall_s": wall,
        "embedded_judgements_per_s": judged / wall,
        "embedded_batch_wall_p50_s": pct(list(finished.values()), 50),
        "embedded_batch_wall_p99_s": pct(list(finished.values()), 99),
        "embedded_result_lag_p50_s": pct(lag, 50),
        "embedded_result_lag_p99_s": pct(lag, 99),
        "embedded_open_batches_max": collector.max_open,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def kafka(n_batches: int, n_essays: int, settings: BatchSettings, workers: int) -> dict:
    """Both flows as processes against a throwaway broker; results read back from Kafka."""
    sys.path.insert(0, str(ROOT / "tests" / "kafka"))
    from broker import start_broker  # the test fixture's broker helper
    from confluent_kafka import Consumer, TopicPartition

    from flows.kafka_cli import publish
    from flows.settings import Settings

    with start_broker() as broker, tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "CJFLOW_KAFKA_BROKERS": broker.bootstrap,
            "CJFLOW_METRICS_PORT": "0",
            "CJFLOW_SNAPSHOT_INTERVAL_S": "5",
            "CJFLOW_JUDGE_PLUGINS": JUDGE,  # the judge flow runs only listed plug-ins
            "PYTHONPATH": str(ROOT),
        }
        st = Settings(kafka_brokers=broker.bootstrap)
        run = [sys.executable, "-m", "flows.cli"]
        subprocess.run([*run, "topics", "create", "--partitions", "4"], env=env, check=True, capture_output=True)
        procs = []
        for flow in ("assessment", "judge"):
            rdir = Path(tmp) / flow
            subprocess.run([*run, "recovery", "init", "--dir", str(rdir), "--partitions", "1"], env=env, check=True,
                           capture_output=True)
            procs.append(subprocess.Popen([*run, "run", flow, "-w", str(workers)],
                                          env={**env, "CJFLOW_RECOVERY_DIR": str(rdir)},
                                          stdout=subprocess.DEVNULL, stderr=open(Path(tmp) / f"{flow}.log", "w")))
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "bench", "enable.auto.commit": False})
        consumer.assign([TopicPartition(st.topics.results, p, -2) for p in range(4)])
        time.sleep(2.0)
        cpu0 = {flow: _cpu_seconds(p.pid) for flow, p in zip(("assessment", "judge"), procs)}
        events = batch_events(n_batches, n_essays, 2, settings, prefix="k")  # opened now
        t0 = time.perf_counter()
        publish(st, st.topics.requests, events)
        results: dict[str, AssessmentResult] = {}
        lag: list[float] = []
        deadline = time.time() + 600
        while len(results) < n_batches and time.time() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            res = AssessmentResult.model_validate_json(msg.value())
            if res.batch_id not in results:
                results[res.batch_id] = res
                lag.append(time.time() - res.occurred_at.timestamp())
        wall = time.perf_counter() - t0
        cpu = {flow: _cpu_seconds(p.pid) - cpu0[flow] for flow, p in zip(("assessment", "judge"), procs)}
        for p in procs:
            p.kill()
        consumer.close()
    # A throughput of batches that failed is no throughput: say so instead of a number.
    unfinished = [r for r in results.values() if r.status.value != "completed"]
    if len(results) < n_batches or unfinished:
        why = unfinished[0].last_error if unfinished else "no result within 600 s"
        raise SystemExit(f"kafka run invalid: {len(results)} of {n_batches} results, {len(unfinished)} not completed"
                         f" ({why}); see the flows' logs")
    judgements = sum(r.comparisons_valid for r in results.values())
    durations = [r.duration_s for r in results.values()]
    return {
        "kafka_workers": workers,
        "kafka_batches_finished": len(results),
        "kafka_judgements": judgements,
        "kafka_wall_s": wall,
        "kafka_judgements_per_s": judgements / wall,
        # The broker, both flows and this reader share 2 cores: per CPU-second of the
        # assessment process is what one worker with a core of its own would sustain.
        "kafka_assessment_cpu_s": cpu["assessment"],
        "kafka_judge_cpu_s": cpu["judge"],
        "kafka_judgements_per_assessment_cpu_s": judgements / cpu["assessment"] if cpu["assessment"] else None,
        "kafka_batch_wall_p50_s": pct(durations, 50),
        "kafka_batch_wall_p99_s": pct(durations, 99),
        "kafka_result_lag_p50_s": pct(lag, 50),
        "kafka_result_lag_p99_s": pct(lag, 99),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--essays", type=int, default=30)
    ap.add_argument("--budget", type=int, default=150)
    ap.add_argument("--in-flight", type=int, default=8)
    ap.add_argument("--kafka", action="store_true", help="also run through Kafka (starts a broker)")
    ap.add_argument("--kafka-batches", type=int, default=None)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    settings = BatchSettings(budget=args.budget, in_flight=args.in_flight, judge_provider=JUDGE)
    out: dict = {"batches": args.batches, "essays": args.essays, "budget": args.budget}
    out.update(machine_only(args.batches, args.essays, settings))
    out.update(single_batch(args.essays))
    out.update(embedded(args.batches, args.essays, settings))
    if args.kafka:
        out.update(kafka(args.kafka_batches or args.batches, args.essays, settings, args.workers))
    out = {k: v for k, v in out.items() if not k.startswith("_")}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:36s} {v:.4g}" if isinstance(v, float) else f"{k:36s} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
