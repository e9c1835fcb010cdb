"""Judge throughput: the async judge operator (one Bytewax worker) with a real SDK client
against the fake provider, which enforces the limits and injects faults.

    python -m bench.judge_throughput --provider anthropic --rpm 600 --latency-ms 200-500 --duration 60 --json
    python -m bench.judge_throughput --rpm 600 --fault-rate 0.1 --duration 60 --json
    python -m bench.judge_throughput --tpm 100000 --duration 60 --json
    python -m bench.judge_throughput --burst 1000 --latency-ms 2000 --json   # all at once, no limits

The client is configured with the same limits the fake enforces. `achieved_rpm` counts
valid judgements finished within the run's duration; the fake reports what it saw (429s
it had to send, the most tokens it admitted in any 60 s window, concurrent requests).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ESSAY = (
    "Autumn is the season I like best. The light turns golden in the late afternoon, the air smells of "
    "wet leaves and woodsmoke, and the whole town seems to slow down after the rush of summer. "
)


def spawn_fake(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start `python -m bench.fake_provider --port 0 ARGS` and return (process, base URL)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_provider", "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    m = re.search(r"(http://\S+)", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"fake provider did not start: {line!r}")
    return proc, m.group(1)


def fake_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/_stats", timeout=10) as resp:
        return json.loads(resp.read())


def _requests(n: int, essay_chars: int, start: int = 0) -> list[Any]:
    from schemas import ComparisonRequested, utc_now
    from schemas.events import PresentedEssay

    body = (ESSAY * (essay_chars // len(ESSAY) + 1))[:essay_chars]
    deadline = utc_now() + timedelta(hours=1)
    out = []
    for i in range(start, start + n):
        out.append(
            ComparisonRequested.create(
                f"bench-{i % 50}",
                f"cmp-{i}",
                1,
                essay_a=PresentedEssay(essay_id=f"a{i}", text=f"[q={i % 10}] {body}"),
                essay_b=PresentedEssay(essay_id=f"b{i}", text=f"[q=4.5] {body}"),
                assignment="Describe your favourite season.",
                deadline=deadline,
            )
        )
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.inputs import DynamicSource, StatelessSourcePartition
    from bytewax.testing import run_main

    from judges.providers import build_provider_judge
    from operators.aio import background_loop
    from operators.judge_call import judge_comparisons

    fake_args = ["--latency-ms", args.latency_ms, "--fault-rate", str(args.fault_rate), "--seed", str(args.seed)]
    if args.rpm:
        fake_args += ["--rpm", str(args.rpm)]
    if args.tpm:
        fake_args += ["--tpm", str(args.tpm)]
    proc, url = spawn_fake(fake_args)
    try:
        judge = build_provider_judge(
            args.provider,
            api_key="sk-bench-not-a-real-key",
            base_url=url if args.provider == "anthropic" else url + "/v1",
            rpm=args.rpm or None,
            tpm=args.tpm or None,
            max_concurrency=max(2000, args.burst),
            timeout_s=30.0,
            max_attempts=10,
        )
        lat_hi = float(args.latency_ms.partition("-")[2] or args.latency_ms) / 1000
        # enough waiting requests to keep the limiter busy, few enough to drain quickly at the end
        rate_per_min = args.rpm or (args.tpm / 1100 if args.tpm else 600)
        backlog = args.burst or max(8, int(rate_per_min / 60 * (lat_hi + 1) * 1.5))
        state: dict[str, Any] = {"submitted": 0, "done": [], "max_in_flight": 0, "t0": None}

        class Partition(StatelessSourcePartition[Any]):
            def __init__(self) -> None:
                self.until = time.monotonic() + (args.duration if not args.burst else 0)

            def next_batch(self) -> list[Any]:
                now = time.monotonic()
                if state["t0"] is None:
                    state["t0"] = now
                    self.until = now + args.duration
                outstanding = state["submitted"] - len(state["done"])
                state["max_in_flight"] = max(state["max_in_flight"], outstanding)
                if args.burst:
                    if state["submitted"] == 0:
                        state["submitted"] = args.burst
                        return _requests(args.burst, args.essay_chars)
                    if len(state["done"]) >= args.burst:
                        raise StopIteration
                    return []
                if now >= self.until:
                    raise StopIteration
                n = backlog - outstanding
                if n <= 0:
                    return []
                batch = _requests(n, args.essay_chars, state["submitted"])
                state["submitted"] += n
                return batch

            def next_awake(self) -> datetime:
                return datetime.now(UTC) + timedelta(milliseconds=20)

        class Source(DynamicSource[Any]):
            def build(self, step_id: str, worker_index: int, worker_count: int) -> Partition:
                return Partition()

        def done(kv: tuple[str, Any]) -> tuple[str, Any]:
            state["done"].append((time.monotonic(), kv[1]))
            return kv

        flow = Dataflow("judge_throughput")
        reqs = op.input("reqs", flow, Source())
        judged = judge_comparisons("judge", op.key_on("shard", reqs, lambda _r: "one"), lambda _r: judge)
        op.inspect("out", op.map("done", judged, done), lambda *_: None)
        started, cpu0 = time.monotonic(), time.process_time()
        run_main(flow)
        wall, cpu = time.monotonic() - started, time.process_time() - cpu0
        import asyncio

        asyncio.run_coroutine_threadsafe(judge.aclose(), background_loop()).result(30)
        stats = fake_stats(url)
    finally:
        proc.terminate()
        proc.wait(10)

    t0 = state["t0"]
    results = [j for _, j in state["done"]]
    valid_in_window = sum(1 for t, j in state["done"] if j.is_valid and (args.burst or t <= t0 + args.duration))
    errors = [j for j in results if not j.is_valid]
    wrong = sum(1 for j in results if j.is_valid and j.winner != _expected(j))
    latencies = sorted(j.latency_ms for j in results if j.is_valid)
    finished = max(t for t, _ in state["done"]) - t0 if state["done"] else 0.0
    out: dict[str, Any] = {
        "provider": args.provider,
        "configured_rpm": args.rpm or None,
        "configured_tpm": args.tpm or None,
        "latency_ms": args.latency_ms,
        "fault_rate": args.fault_rate,
        "duration_s": args.duration if not args.burst else round(finished, 3),
        "achieved_rpm": round(valid_in_window / (args.duration if not args.burst else max(finished, 1e-9)) * 60, 1),
        "judgements": len(results),
        "error_judgements": len(errors),
        "error_kinds": sorted({str(j.error_kind) for j in errors}),
        "wrong_winner": wrong,
        "max_in_flight": state["max_in_flight"],
        "latency_p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "latency_p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 1) if latencies else None,
        "cost_usd": round(sum(j.cost_usd for j in results), 6),
        "server_requests": stats["requests"],
        "server_429_requests_limit": stats["rate_limited_requests"],
        "server_429_tokens_limit": stats["rate_limited_tokens"],
        "server_injected": stats["injected"],
        "server_max_requests_60s": stats["max_requests_60s"],
        "server_max_tokens_60s": stats["max_tokens_60s"],
        "server_max_in_flight": stats["max_in_flight"],
        "wall_s": round(wall, 2),
        "client_cpu_s": round(cpu, 2),
    }
    if args.rpm:
        out["achieved_fraction"] = round(out["achieved_rpm"] / args.rpm, 4)
    if args.tpm:
        out["tokens_fraction_of_limit_max_60s"] = round(stats["max_tokens_60s"] / args.tpm, 4)
    if args.burst:
        out["burst"] = args.burst
        out["burst_finished_s"] = round(finished, 3)
    return out


def _expected(j: Any) -> str:
    i = int(j.comparison_id.rsplit("-", 1)[1])
    return "A" if i % 10 >= 4.5 else "B"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--provider", choices=["anthropic", "openai"], default="anthropic")
    p.add_argument(
        "--rpm", type=float, default=0, help="requests/min, enforced by the fake and configured in the client"
    )
    p.add_argument("--tpm", type=float, default=0, help="tokens/min, enforced by the fake and configured in the client")
    p.add_argument("--latency-ms", default="200-500", help="fake latency, e.g. 200-500 or 2000")
    p.add_argument("--fault-rate", type=float, default=0.0, help="injected 429/529/500 per request")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    p.add_argument("--burst", type=int, default=0, help="send this many requests at once instead")
    p.add_argument("--essay-chars", type=int, default=1200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    out = run(args)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>32}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
