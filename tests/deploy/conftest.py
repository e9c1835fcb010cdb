"""Fixtures for the offline deployment checks: rendered manifests, promtool, deploy/envvars.py."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_helpers import DEPLOY, K8S, rendered


@pytest.fixture(scope="session")
def example() -> list[dict]:
    return rendered(K8S / "overlays" / "example")


@pytest.fixture(scope="session")
def base() -> list[dict]:
    return rendered(K8S / "base")


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool from Debian's prometheus package; skipped locally without it, fatal in CI."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail("promtool is missing in CI: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return path


@pytest.fixture(scope="session")
def envvars():
    """deploy/envvars.py (deploy/ is not a package)."""
    spec = importlib.util.spec_from_file_location("cjflow_deploy_envvars", DEPLOY / "envvars.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
