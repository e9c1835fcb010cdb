"""`cjflow submit` with a broker that cannot be reached: the events cannot be delivered, so it
exits non-zero with a one-line error (not a traceback, not "submitted")."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "cj.assessment.requests.v1"


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _submit_to_nowhere(tmp_path: Path) -> tuple[subprocess.CompletedProcess, float]:
    folder = tmp_path / "essays"
    folder.mkdir()
    for i in range(3):
        (folder / f"s{i}.txt").write_text(f"Essay number {i}. [q={i}]")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CJFLOW_KAFKA_BROKERS": f"127.0.0.1:{_closed_port()}",
        # librdkafka gives up on a message after this long (default 5 minutes)
        "CJFLOW_KAFKA_CONFIG": json.dumps({"message.timeout.ms": "2000"}),
        "CJFLOW_TOPICS__REQUESTS": TOPIC,
    }
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "submit", str(folder), "--judge", "offline"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    return out, time.monotonic() - started


def _cjflow_lines(stderr: str) -> list[str]:
    """stderr without librdkafka's own log lines ('%3|<time>|FAIL|rdkafka#producer-1| ...')."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("%")]


def test_submit_to_an_unreachable_broker_fails_with_one_line(tmp_path):
    out, took = _submit_to_nowhere(tmp_path)
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert "submitted" not in out.stdout
    lines = _cjflow_lines(out.stderr)
    assert len(lines) == 1, lines  # no traceback
    assert lines[0].startswith(f"cjflow: error: could not publish 4 events to {TOPIC}"), lines[0]
    assert "timed out" in lines[0]
    assert took < 15, f"took {took:.1f} s"


def test_submit_to_an_unreachable_broker_prints_nothing_but_its_error(tmp_path):
    out, _ = _submit_to_nowhere(tmp_path)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr[:500]
