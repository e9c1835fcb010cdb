"""Fixtures for the judge tests (helpers live in judge_helpers.py, importable from here)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from judge_helpers import fake, fake_process  # noqa: F401  (fixtures)
