"""The deployment docs: the configuration table is generated and current, and deploy.md covers
what a platform engineer needs and says what was not verified."""

from __future__ import annotations

import re

from deploy_helpers import ROOT

DEPLOY_DOC = ROOT / "docs" / "deploy.md"


def test_configuration_table_is_current(envvars):
    assert envvars.documented_table() == envvars.render_table(), (
        "docs/configuration.md is stale: run .venv/bin/python deploy/envvars.py --write"
    )


def test_configuration_table_lists_every_variable(envvars):
    table = envvars.documented_table()
    for name in envvars.settings_variable_names() | envvars.other_variable_names():
        assert f"`{name}`" in table, name


def test_deploy_doc_sections_and_limits():
    text = DEPLOY_DOC.read_text()
    headings = set(re.findall(r"^## (.+)$", text, flags=re.MULTILINE))
    assert {"Build", "Configure", "Deploy", "Scale out", "Upgrade", "Recover"} <= headings
    assert "configuration.md" in text
    lowered = text.lower()
    assert "no kubernetes cluster and no docker engine" in lowered
    assert "not** been built" in text


def test_deploy_doc_names_real_files():
    text = DEPLOY_DOC.read_text()
    for path in set(re.findall(r"`((?:deploy|docs)/[\w./-]+\.(?:yml|yaml|json|py|md|sh))`", text)):
        assert (ROOT / path).exists(), path
