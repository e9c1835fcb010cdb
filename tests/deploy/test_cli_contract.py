"""The commands the manifests run exist in the `cjflow` CLI with the arguments given there."""

from __future__ import annotations

import argparse
import json
import os
import subprocess

import pytest
from deploy_helpers import K8S, SH, containers, pod_env, pod_specs, stub_cjflow

SCRIPTS = K8S / "base" / "scripts"


class _Parsed(Exception):
    pass


def parses(argv: list[str], monkeypatch) -> None:
    """Run flows.cli.main's argument parsing only: fail on a usage error (exit 2)."""
    from flows import cli

    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    try:
        cli.main(argv)
    except _Parsed:
        return
    except SystemExit as exc:
        pytest.fail(f"`cjflow {' '.join(argv)}` is not accepted by the CLI (exit {exc.code})")
    pytest.fail(f"`cjflow {' '.join(argv)}` did not reach argument parsing")


def manifest_commands(docs: list[dict], tmp_path) -> list[list[str]]:
    """cjflow invocations: direct container commands, and what start-flow.sh execs."""
    out = []
    for workload, spec in pod_specs(docs):
        for c in containers(spec):
            command = c.get("command", []) + c.get("args", [])
            if command and command[0] == "cjflow":
                out.append(command[1:])
            elif command[-2:-1] and command[-2].endswith("start-flow.sh"):
                bin_dir, log = stub_cjflow(tmp_path / workload["metadata"]["name"])
                env = pod_env(docs, workload, 0)
                subprocess.run([SH, str(SCRIPTS / "start-flow.sh"), command[-1]],
                               env={**env, "PATH": f"{bin_dir}:/usr/bin:/bin"}, check=True, capture_output=True)
                out.extend(json.loads(line) for line in log.read_text().splitlines())
    return out


def test_manifest_commands_exist_in_the_cli(example, tmp_path, monkeypatch):
    commands = manifest_commands(example, tmp_path)
    assert {tuple(c[:2]) for c in commands} >= {("run", "assessment"), ("run", "judge"), ("db", "upgrade"),
                                               ("topics", "create")}
    for argv in commands:
        with monkeypatch.context() as m:
            parses(argv, m)


def test_the_contract_check_catches_an_unknown_command(monkeypatch):
    with pytest.raises(pytest.fail.Exception):
        parses(["no-such-command"], monkeypatch)


@pytest.mark.parametrize("flow", ["assessment", "judge"])
@pytest.mark.parametrize("ordinal", [0, 1])
def test_cjflow_run_starts_every_process_of_the_cluster(example, flow, ordinal, tmp_path, monkeypatch):
    """What start-flow.sh runs in pod <flow>-<ordinal>, with the pod's environment, reaches
    Bytewax's cli_main (patched out) as that process of the cluster. Recovery partitions live
    on process 0 only (init-recovery.sh), so the other processes start with an empty
    recovery directory; Bytewax finds the partitions across the cluster."""
    import bytewax._bytewax
    import prometheus_client

    from flows import cli

    sts = next(d for d in example if d["kind"] == "StatefulSet" and d["metadata"]["name"] == f"cjflow-{flow}")
    env = pod_env(example, sts, ordinal)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    if ordinal == 0:
        from bytewax.recovery import init_db_dir

        init_db_dir(recovery, int(env["CJFLOW_RECOVERY_PARTITIONS"]))
    # files the pod would have mounted from Secrets
    for key in [k for k in env if k.endswith("_FILE")]:
        secret = tmp_path / key.lower()
        secret.write_text("{}" if "KAFKA" in key else "not-a-real-secret")
        env[key] = str(secret)
    env.update(CJFLOW_RECOVERY_DIR=str(recovery), CJFLOW_DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")

    bin_dir, log = stub_cjflow(tmp_path)
    subprocess.run([SH, str(SCRIPTS / "start-flow.sh"), flow], env={**env, "PATH": f"{bin_dir}:/usr/bin:/bin"},
                   check=True, capture_output=True)
    argv = json.loads(log.read_text().splitlines()[0])

    for key in list(os.environ):
        if key.startswith(("CJFLOW_", "BYTEWAX_")):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    started: dict = {}
    monkeypatch.setattr(bytewax._bytewax, "cli_main", lambda flow_, **kw: started.update(kw, flow=flow_))
    monkeypatch.setattr(prometheus_client, "start_http_server", lambda port, *a, **k: started.update(metrics=port))

    assert cli.main(argv) == 0
    assert started["process_id"] == ordinal
    assert len(started["addresses"]) == sts["spec"]["replicas"]
    assert started["recovery_config"] is not None
    assert started["metrics"] == int(env["CJFLOW_METRICS_PORT"])


def test_a_metrics_port_in_use_is_a_one_line_error(capsys):
    """Both flows on one host with the default port: the second says what to do (it raised
    an OSError traceback)."""
    import socket

    from flows.cli import main

    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["run", "judge", "--metrics-port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot serve /metrics on port {port}" in err[0] and "--metrics-port" in err[0]
