"""Dockerfile lint (no Docker engine here, so nothing is built): pinned slim base, non-root user,
dependencies from pyproject.toml, every package copied, ports and uid as the manifests expect."""

from __future__ import annotations

import re
import shlex
import tomllib

import pytest
from deploy_helpers import ROOT, containers, one, pod_specs

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def build_args() -> dict[str, str]:
    args = {}
    for word, rest in instructions():
        if word == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args[key] = value.strip('"')
    return args


def base_images() -> list[str]:
    args = build_args()
    images = []
    for word, rest in instructions():
        if word == "FROM":
            image = rest.split()[0]
            images.append(re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], image))
    return images


def test_base_image_is_slim_and_pinned():
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    images = base_images()
    assert images
    for image in images:
        assert "latest" not in image, image
        m = re.fullmatch(r"python:(3)\.(\d+)\.(\d+)-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", image)
        assert m, f"base image {image!r} must be an exact python X.Y.Z slim tag (optionally with a digest)"
        minor = int(m.group(2))
        # Bytewax 0.21.1 wheels: CPython 3.8-3.12; pyproject: >=3.11,<3.13
        assert 11 <= minor <= 12 and ">=3.11" in requires, image


def test_runs_as_a_fixed_non_root_user(example):
    users = [rest for word, rest in instructions() if word == "USER"]
    assert users, "no USER instruction: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and user.isdigit(), "final USER must be a numeric non-root uid"
    for _, spec in pod_specs(example):
        assert str(spec["securityContext"]["runAsUser"]) == user


def test_installs_the_project_from_pyproject():
    runs = " ".join(rest for word, rest in instructions() if word == "RUN")
    assert re.search(r"pip install [^&]*\s\.(\s|$)", runs), "dependencies must come from pyproject.toml (pip install .)"
    # into the venv the runtime stage copies, then checked for broken or missing requirements
    venv = re.search(r"python -m venv (\S+)", runs)
    assert venv, "the build stage must create a venv"
    assert re.search(rf"{re.escape(venv.group(1))}/bin/pip install [^&]*\s\.(\s|$)", runs), (
        "the project must be installed into the build stage's venv"
    )
    assert f"{venv.group(1)}/bin/pip check" in runs, "the installed requirements must be checked (pip check)"
    copies = [rest for word, rest in instructions() if word == "COPY"]
    copied = " ".join(copies)
    assert "pyproject.toml" in copied
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    ignore = DOCKERIGNORE.read_text().splitlines()
    for pkg in packages:
        top = pkg.split(".")[0]
        assert any(shlex.split(c)[0].rstrip("/") == top for c in copies if not c.startswith("--")), (
            f"package {top} is not copied into the image"
        )
        assert f"!{top}/" in ignore or f"!{top}" in ignore, f".dockerignore excludes package {top}"


def test_no_risky_instructions():
    for word, rest in instructions():
        assert word != "ADD" or not re.search(r"https?://", rest), "no remote ADD"
        assert not re.search(r"curl[^|]*\|\s*(ba)?sh", rest), "no curl | sh"
        assert "sudo" not in rest
        if word == "FROM":
            assert ":latest" not in rest


def test_ports_and_entrypoint_match_the_manifests(example):
    exposed = {int(p) for word, rest in instructions() if word == "EXPOSE" for p in rest.split()}
    sts = one(example, "StatefulSet", "cjflow-assessment")
    ports = {p["containerPort"] for p in sts["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert ports <= exposed
    entry = [rest for word, rest in instructions() if word == "ENTRYPOINT"][-1]
    script = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry.strip('[]" ').split('"')[0] in script


@pytest.mark.parametrize("flow", ["assessment", "judge"])
def test_writable_paths_exist_in_the_image(example, flow):
    """The recovery mount point exists and belongs to the runtime user (fsGroup covers PVCs)."""
    sts = one(example, "StatefulSet", f"cjflow-{flow}")
    mounts = {m["mountPath"] for c in containers(sts["spec"]["template"]["spec"]) for m in c["volumeMounts"]}
    runs = " ".join(rest for word, rest in instructions() if word == "RUN")
    recovery = next(m for m in mounts if "recovery" in m)
    assert f"mkdir -p {recovery}" in runs and recovery in runs.split("chown", 1)[1]


def test_pip_install_dot_ships_every_module_and_data_file():
    """The image installs the project non-editable (`pip install .`), which ships only the
    packages and package data pyproject.toml lists: every Python package directory (one with
    __init__.py) under them must be listed, and every non-Python file covered by package-data
    (e.g. the Alembic migrations that `cjflow db upgrade` runs in the migration Job)."""
    import fnmatch

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    data = config.get("package-data", {})
    missing_packages, missing_data = [], []
    for top in {p.split(".")[0] for p in listed}:
        for init in (ROOT / top).rglob("__init__.py"):
            package = ".".join(init.parent.relative_to(ROOT).parts)
            if package not in listed:
                missing_packages.append(package)
        for path in (ROOT / top).rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            package_dir = path.parent
            while not (package_dir / "__init__.py").exists():
                package_dir = package_dir.parent
            package = ".".join(package_dir.relative_to(ROOT).parts)
            rel = path.relative_to(package_dir).as_posix()
            patterns = data.get(package, []) + data.get("*", [])
            if not any(fnmatch.fnmatch(rel, pattern) for pattern in patterns):
                missing_data.append(f"{package}: {rel}")
    assert not (missing_packages or missing_data), (
        f"pip install . would leave out packages {sorted(missing_packages)} (add to [tool.setuptools].packages) "
        f"and data files {sorted(missing_data)} (add to [tool.setuptools.package-data])"
    )
