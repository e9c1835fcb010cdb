"""`cjflow assess --judge anthropic|openai` uses the real provider judges (here against the
fake provider through the SDKs' base-URL variables), and fails in one readable line with
no key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from judge_helpers import TEST_KEY, base_url
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[2]
ENV = {"anthropic": "ANTHROPIC", "openai": "OPENAI"}


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        timeout=180,
    )


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_assess_with_a_provider_judge(fake, provider, tmp_path):
    essays = tmp_path / "essays"
    essays.mkdir()
    for i in range(6):
        (essays / f"s{i}.txt").write_text(f"Essay number {i} about autumn. [q={i}]")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "OPENAI_"))}
    env[f"{ENV[provider]}_API_KEY"] = TEST_KEY
    env[f"{ENV[provider]}_BASE_URL"] = base_url(fake, provider)
    out = tmp_path / "out"
    proc = _cli(["assess", str(essays), "--judge", provider, "--out", str(out), "--budget", "40", "--no-progress"], env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert TEST_KEY not in proc.stdout + proc.stderr
    result = json.loads(next(out.glob("*.json")).read_text())
    scores = {e["essay_id"]: e["score"] for e in result["essays"]}
    rho = spearmanr([int(k[1:]) for k in scores], list(scores.values()))[0]
    assert rho > 0.8
    assert result["cost_usd"] > 0 and fake.stats.ok >= 10


def test_assess_without_a_key_is_one_readable_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "OPENAI_"))}
    essays = tmp_path / "essays"
    essays.mkdir()
    for i in range(3):
        (essays / f"s{i}.txt").write_text(f"Essay {i}.")
    proc = _cli(["assess", str(essays), "--judge", "anthropic", "--out", str(tmp_path / "o")], env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "ANTHROPIC_API_KEY" in lines[0], proc.stderr
