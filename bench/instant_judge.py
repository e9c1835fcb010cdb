"""An instant judge for benchmarks and tests: decides by a hidden ability marker `[q=X]`
in each essay, with Bradley-Terry noise seeded by the texts (so it is repeatable)."""

from __future__ import annotations

import math
import re
import zlib

_MARK = re.compile(r"\[q=(-?\d+(?:\.\d+)?)\]")


def ability(text: str) -> float:
    m = _MARK.search(text)
    return float(m.group(1)) if m else 0.0


def decide(essay_a: str, essay_b: str) -> str:
    p = 1.0 / (1.0 + math.exp(-(ability(essay_a) - ability(essay_b))))
    u = (zlib.crc32((essay_a + "\x00" + essay_b).encode()) % 100_000) / 100_000
    return "A" if u < p else "B"


async def judge(essay_a: str, essay_b: str) -> str:
    """Plug-in judge interface (`bench.instant_judge:judge`); async so no thread hop."""
    return decide(essay_a, essay_b)
