"""The pod scripts: process id and cluster addresses from the StatefulSet ordinal, and recovery
partitions created once, on ordinal 0 only; a real two-process Bytewax cluster runs on what
init-recovery.sh leaves behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from deploy_helpers import K8S, SH, one, pod_env, real_cjflow, stub_cjflow

SCRIPTS = K8S / "base" / "scripts"
VENV_BIN = str(Path(sys.executable).parent)


def run_script(script: str, env: dict[str, str], path: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SH, str(SCRIPTS / script), *args],
        env={**env, "PATH": path},
        capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("script", ["start-flow.sh", "init-recovery.sh"])
def test_scripts_are_posix_sh(script):
    out = subprocess.run([SH, "-n", str(SCRIPTS / script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("flow", ["assessment", "judge"])
def test_start_flow_derives_process_id_and_addresses(example, flow, tmp_path):
    sts = one(example, "StatefulSet", f"cjflow-{flow}")
    name, namespace, replicas = sts["metadata"]["name"], sts["metadata"]["namespace"], sts["spec"]["replicas"]
    service = sts["spec"]["serviceName"]
    container = next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "flow")
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "cluster")
    metrics_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
    expected = ";".join(f"{name}-{i}.{service}.{namespace}.svc.cluster.local:{port}" for i in range(replicas))
    bin_dir, log = stub_cjflow(tmp_path)
    for ordinal in range(replicas):
        out = run_script("start-flow.sh", pod_env(example, sts, ordinal), f"{bin_dir}:/usr/bin:/bin",
                         *container["command"][2:])
        assert out.returncode == 0, out.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [
        ["run", flow, "--process-id", str(i), "--addresses", expected, "--metrics-port", str(metrics_port)]
        for i in range(replicas)
    ]


def test_start_flow_refuses_an_inconsistent_cluster(example, tmp_path):
    sts = one(example, "StatefulSet", "cjflow-judge")
    bin_dir, log = stub_cjflow(tmp_path)
    path = f"{bin_dir}:/usr/bin:/bin"
    beyond = pod_env(example, sts, sts["spec"]["replicas"])  # ordinal outside BYTEWAX_REPLICAS
    assert run_script("start-flow.sh", beyond, path, "judge").returncode == 64
    no_size = {k: v for k, v in pod_env(example, sts, 0).items() if k != "BYTEWAX_REPLICAS"}
    assert run_script("start-flow.sh", no_size, path, "judge").returncode != 0
    bad_host = {**pod_env(example, sts, 0), "HOSTNAME": "judge"}
    assert run_script("start-flow.sh", bad_host, path, "judge").returncode == 64
    assert not log.exists(), "cjflow must not start on a bad configuration"


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_init_recovery_then_a_two_process_cluster_resumes(example, tmp_path):
    """Each pod start re-runs the init container: after a completed run it must leave the
    partitions alone, so the cluster's second run resumes (here: at the end of its input,
    emitting nothing) instead of starting over."""
    sts = one(example, "StatefulSet", "cjflow-assessment")
    path = f"{real_cjflow(tmp_path)}:{VENV_BIN}:/usr/bin:/bin"
    envs = []
    for ordinal in (0, 1):
        env = pod_env(example, sts, ordinal)
        env["CJFLOW_RECOVERY_DIR"] = str(tmp_path / f"recovery-{ordinal}")  # the PVC
        envs.append(env)
    partitions = int(envs[0]["CJFLOW_RECOVERY_PARTITIONS"])
    dirs = [Path(env["CJFLOW_RECOVERY_DIR"]) for env in envs]

    def init_containers() -> None:
        for env in envs:
            out = run_script("init-recovery.sh", env, path)
            assert out.returncode == 0, out.stderr

    for _ in range(2):  # a pod restarted before the flow ever ran re-runs its init container
        init_containers()
    assert sorted(p.name for p in dirs[0].iterdir()) == sorted(f"part-{i}.sqlite3" for i in range(partitions))
    assert list(dirs[1].iterdir()) == []

    # A real Bytewax cluster with the partitions on process 0 only: run, restart (init
    # containers again), resume.
    (tmp_path / "tiny_flow.py").write_text(textwrap.dedent("""
        import bytewax.operators as op
        from bytewax.connectors.stdio import StdOutSink
        from bytewax.dataflow import Dataflow
        from bytewax.testing import TestingSource

        flow = Dataflow("tiny")
        keyed = op.key_on("key", op.input("in", flow, TestingSource(range(30))), lambda x: str(x % 3))
        op.output("out", op.stateful_map("sum", keyed, lambda s, x: ((s or 0) + x, (s or 0) + x)), StdOutSink())
    """))
    addresses = ";".join(f"127.0.0.1:{p}" for p in _free_ports(2))
    emitted: list[list[str]] = []
    for run in range(2):
        if run:
            init_containers()  # the pods restart: their init containers run again
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "bytewax.run", "tiny_flow:flow", "-i", str(i), "-a", addresses,
                 "-r", str(dirs[i]), "-s", "1", "-b", "0"],
                cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)},
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for i in (0, 1)
        ]
        try:
            results = [p.communicate(timeout=60) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        for p, (stdout, stderr) in zip(procs, results):
            assert p.returncode == 0, stderr
        emitted.append(sorted(line for stdout, _ in results for line in stdout.splitlines() if line.startswith("('")))
    # The first run emitted every running sum: the three keys' totals among them.
    assert len(emitted[0]) == 30, emitted[0]
    for key in range(3):
        assert f"('{key}', {sum(range(key, 30, 3))})" in emitted[0]
    assert emitted[1] == [], (
        "the second run started over instead of resuming from the recovery partitions: " + ", ".join(emitted[1][:5])
    )
    assert sorted(p.name for p in dirs[0].iterdir()) == sorted(f"part-{i}.sqlite3" for i in range(partitions))
    assert list(dirs[1].iterdir()) == [], "process 1 must not grow partitions of its own"
