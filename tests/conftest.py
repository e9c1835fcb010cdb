"""Shared fixtures: paths to the examples, and a tiny plug-in judge module."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(ROOT / "tests" / "plugins"))


@pytest.fixture
def examples() -> Path:
    return EXAMPLES
