"""Fixtures shared by the flows tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("CJFLOW_"):
            monkeypatch.delenv(name)
    return monkeypatch
