"""Plug-in judges for tests: they decide by a hidden quality marker `[q=N]` in the text."""

import re

CALLS = []


def _q(text: str) -> int:
    m = re.search(r"\[q=(\d+)\]", text)
    return int(m.group(1)) if m else 0


def by_marker(essay_a: str, essay_b: str) -> str:
    CALLS.append((essay_a, essay_b))
    return "A" if _q(essay_a) >= _q(essay_b) else "B"


def shortest_wins(essay_a: str, essay_b: str) -> dict:
    return {"winner": "A" if len(essay_a) <= len(essay_b) else "B", "confidence": 0.9, "justification": "shorter"}


ASSIGNMENTS = []  # what the plug-ins taking `assignment` were given


async def async_by_marker(essay_a: str, essay_b: str, assignment: str = "") -> str:
    ASSIGNMENTS.append(assignment)
    return "A" if _q(essay_a) >= _q(essay_b) else "B"


def sync_with_assignment(essay_a: str, essay_b: str, *, assignment: str) -> str:
    ASSIGNMENTS.append(assignment)
    return "A" if _q(essay_a) >= _q(essay_b) else "B"


SCRIPTED = []  # the next outputs of `scripted`


def scripted(essay_a: str, essay_b: str):
    return SCRIPTED.pop(0)


def broken(essay_a: str, essay_b: str) -> str:
    raise RuntimeError("plug-in bug")


def bad_output(essay_a: str, essay_b: str) -> str:
    return "maybe"


NOT_CALLABLE = 3


_SEEN: set = set()


async def hangs_first_time(essay_a: str, essay_b: str) -> str:
    """Never answers the first time it sees a pair (a stuck request); answers repeats."""
    import asyncio

    key = (essay_a, essay_b)
    if key not in _SEEN:
        _SEEN.add(key)
        await asyncio.sleep(3600)
    return "A" if _q(essay_a) >= _q(essay_b) else "B"
