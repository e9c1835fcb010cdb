"""The environment variables the manifests set are the ones the code reads.

A variable must be a field of one of deploy/envvars.py's SETTINGS_SOURCES (flows.settings.Settings
with CJFLOW_X__Y -> field x.y, or the judges' ProviderSettings as CJFLOW_<PROVIDER>_X), and that
model must actually take the manifest's value from the environment; or it must be in
OTHER_VARIABLES, whose declared readers are checked here to mention it literally.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import tomllib
import typing

import pytest
from deploy_helpers import K8S, OVERLAYS, ROOT, by_kind, containers, pod_specs, rendered
from pydantic import TypeAdapter

SCRIPTS = K8S / "base" / "scripts"
TARGETS = [K8S / "base", *OVERLAYS]


def manifest_env(docs: list[dict]) -> dict[str, set[str | None]]:
    """name -> literal values set anywhere in the rendered manifests (None: from the downward API)."""
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind(docs, "ConfigMap")}
    out: dict[str, set[str | None]] = {}
    for workload, spec in pod_specs(docs):
        for c in containers(spec):
            for e in c.get("env", []):
                out.setdefault(e["name"], set()).add(e.get("value"))
            for ref in c.get("envFrom", []):
                assert "secretRef" not in ref, "envFrom a Secret hides which variables are set: mount files instead"
                assert "prefix" not in ref
                for key, value in config_maps[ref["configMapRef"]["name"]].items():
                    out.setdefault(key, set()).add(value)
    return out


def test_settings_naming_is_what_the_deploy_side_assumes(envvars):
    from flows.settings import Settings

    assert Settings.model_config["env_prefix"] == "CJFLOW_"
    assert Settings.model_config["env_nested_delimiter"] == envvars.NESTED
    names = [v.name for v in envvars.settings_variables()]
    assert len(names) == len(set(names)), "two settings fields map to one variable name"
    assert {"CJFLOW_TOPICS__RESULTS", "CJFLOW_ANTHROPIC_API_KEY_FILE"} <= set(names)


@pytest.mark.parametrize("path", TARGETS, ids=lambda p: p.name)
def test_every_variable_set_is_known(path, envvars):
    env = manifest_env(rendered(path))
    unknown = set(env) - envvars.settings_variable_names() - envvars.other_variable_names()
    assert not unknown, (
        f"the manifests set variables that are neither settings fields nor allow-listed: {sorted(unknown)} "
        "(deploy/envvars.py)"
    )


@pytest.mark.parametrize("path", TARGETS, ids=lambda p: p.name)
def test_settings_variables_reach_their_model(path, envvars, monkeypatch):
    """Set each manifest value alone in the environment and read the model: the field takes it."""
    settings_vars = {v.name: v for v in envvars.settings_variables()}
    env = manifest_env(rendered(path))
    set_here = {k: v for k, v in env.items() if k in settings_vars}
    assert "CJFLOW_KAFKA_BROKERS" in set_here, "the manifests set no settings variable at all?"
    for name, values in sorted(set_here.items()):
        var = settings_vars[name]
        for value in values:
            assert value is not None, f"{name}: settings variables take literal values"
            for other in list(os.environ):
                if other.startswith("CJFLOW_"):
                    monkeypatch.delenv(other)
            monkeypatch.setenv(name, value)
            model, annotation = var.source.read(), None
            for part in var.path:
                annotation = type(model).model_fields[part].annotation
                model = getattr(model, part)
            # pydantic-settings decodes complex fields (dicts, models) from JSON
            raw = json.loads(value) if typing.get_origin(annotation) is dict else value
            expected = TypeAdapter(annotation).validate_python(raw)
            assert model == expected, f"{name}={value!r} did not reach {var.source.model} {var.path}: {model!r}"


def _python_sources() -> list:
    """The Python code that goes into the image: the packages listed in pyproject.toml."""
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    return [p for pkg in packages for p in (ROOT / pkg.replace(".", "/")).rglob("*.py")]


def _mentions(name: str, reader: str) -> bool:
    if reader == "python":
        pattern = re.compile(rf"""["']{re.escape(name)}["']""")
        return any(pattern.search(p.read_text(encoding="utf-8", errors="replace")) for p in _python_sources())
    if reader == "script":
        pattern = re.compile(rf"\$\{{?{re.escape(name)}\b")
        return any(pattern.search(p.read_text()) for p in SCRIPTS.glob("*.sh"))
    if reader.startswith("package:"):
        dist = importlib.metadata.distribution(reader.split(":", 1)[1])
        return any(
            name in f.read_text() for f in dist.files or [] if str(f).endswith(".py") and f.locate().exists()
        )
    raise AssertionError(f"unknown reader kind {reader!r}")


def test_every_allow_listed_variable_is_read_where_declared(envvars):
    unread = [
        f"{v.name} (declared reader: {reader})"
        for v in envvars.OTHER_VARIABLES
        for reader in v.readers
        if not _mentions(v.name, reader)
    ]
    assert not unread, "allow-listed variables that nothing reads: " + ", ".join(unread)


def test_allow_list_has_no_settings_variables(envvars):
    assert not envvars.other_variable_names() & envvars.settings_variable_names()
