"""The built-in offline judge: deterministic, position-neutral, and ranks the examples sensibly."""

from __future__ import annotations

import csv
import itertools
import socket
from pathlib import Path

import pytest
from scipy.stats import spearmanr

from judges import offline
from judges.offline import offline_verdict, surface_score

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _essays() -> dict[str, str]:
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted((EXAMPLES / "essays").glob("*.txt"))}


def _quality() -> dict[str, int]:
    with open(EXAMPLES / "quality_order.csv", newline="") as f:
        return {r["essay_id"]: int(r["quality_rank"]) for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def essays() -> dict[str, str]:
    return _essays()


@pytest.fixture(scope="module")
def pairs(essays: dict[str, str]) -> list[tuple[str, str]]:
    return list(itertools.combinations(sorted(essays), 2))


def test_example_data_is_consistent(essays: dict[str, str]) -> None:
    quality = _quality()
    assert len(essays) == 24
    assert set(quality) == set(essays)
    assert sorted(quality.values()) == list(range(1, 25))
    assert all(p.suffix == ".txt" for p in (EXAMPLES / "essays").iterdir())
    with open(EXAMPLES / "anchors.csv", newline="") as f:
        anchors = {r["essay_id"]: r["grade"] for r in csv.DictReader(f)}
    assert len(anchors) == 6 and set(anchors) <= set(essays)
    scale = ["F", "E", "D", "D+", "C", "C+", "B", "A"]
    # better intended quality -> higher anchor grade
    by_quality = sorted(anchors, key=quality.__getitem__)
    grades = [scale.index(anchors[e]) for e in by_quality]
    assert grades == sorted(grades, reverse=True) and len(set(grades)) == 6


def test_deterministic(essays: dict[str, str], pairs: list[tuple[str, str]]) -> None:
    first = [offline_verdict(essays[a], essays[b]) for a, b in pairs]
    offline._analyse.cache_clear()
    second = [offline_verdict(essays[a], essays[b]) for a, b in pairs]
    assert first == second
    for text in essays.values():
        assert surface_score(text) == surface_score(text)


def test_swapping_positions_swaps_the_winner(essays: dict[str, str], pairs: list[tuple[str, str]]) -> None:
    flip = {"A": "B", "B": "A"}
    a_wins = 0
    for a, b in pairs:
        w1, c1, _ = offline_verdict(essays[a], essays[b])
        w2, c2, _ = offline_verdict(essays[b], essays[a])
        assert w2 == flip[w1], (a, b)
        assert c1 == c2
        a_wins += w1 == "A"
    assert 0 < a_wins < len(pairs)


def test_exact_ties_are_position_neutral() -> None:
    # same surface features, different words: scores tie, the hash decides, swapping still flips
    x = "Cats are nice. They sleep a lot."
    y = "Dogs are loud. They bark a lot."
    assert surface_score(x) == surface_score(y)
    w1, c1, why = offline_verdict(x, y)
    w2, c2, _ = offline_verdict(y, x)
    assert {w1, w2} == {"A", "B"}
    assert c1 == c2 == 0.5
    assert "tie" in why
    # identical texts: still a valid, deterministic verdict
    assert offline_verdict(x, x) == offline_verdict(x, x)
    assert offline_verdict(x, x)[0] in ("A", "B")


def test_confidence_and_justification_bounds(essays: dict[str, str], pairs: list[tuple[str, str]]) -> None:
    for a, b in pairs:
        winner, confidence, why = offline_verdict(essays[a], essays[b])
        assert winner in ("A", "B")
        assert 0.5 <= confidence <= 1.0
        assert 0 < len(why) <= 200
        assert why.startswith(winner)
    # confidence grows with the score gap
    quality = _quality()
    best = min(quality, key=quality.__getitem__)
    worst = max(quality, key=quality.__getitem__)
    assert offline_verdict(essays[best], essays[worst])[1] > 0.9


@pytest.mark.parametrize(
    "text",
    ["", "   \n\n  ", "!!!", "word", "A" * 5000, "one two three " * 400, "Title\n\nBody text here."],
)
def test_degenerate_inputs(text: str) -> None:
    winner, confidence, why = offline_verdict(text, "A short essay. It has two sentences.")
    assert winner in ("A", "B") and 0.5 <= confidence <= 1.0 and len(why) <= 200
    assert isinstance(surface_score(text), float)


def test_surface_penalties_point_the_right_way() -> None:
    clean = (
        "Schools should keep the five-day week. However, teachers need more planning time.\n\n"
        "For example, smaller classes would help. Therefore, the week should stay as it is."
    )
    sloppy = clean.replace("However", "however").replace("Schools", "schools")
    shouting = clean.replace("keep the five-day week", "KEEP THE FIVE-DAY WEEK!!!")
    misspelt = clean.replace("because", "becuase").replace("would", "wuold").replace("needs", "dont")
    misspelt = misspelt.replace("need more", "realy need alot more")
    assert surface_score(clean) > surface_score(sloppy)
    assert surface_score(clean) > surface_score(shouting)
    assert surface_score(clean) > surface_score(misspelt)


def test_no_network(monkeypatch: pytest.MonkeyPatch, essays: dict[str, str]) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the offline judge must not touch the network")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    offline._analyse.cache_clear()
    a, b = sorted(essays)[:2]
    assert offline_verdict(essays[a], essays[b])[0] in ("A", "B")


def test_round_robin_recovers_intended_quality_order(essays: dict[str, str], pairs: list[tuple[str, str]]) -> None:
    quality = _quality()
    wins = dict.fromkeys(essays, 0)
    for a, b in pairs:
        winner, _, _ = offline_verdict(essays[a], essays[b])
        wins[a if winner == "A" else b] += 1
    ids = sorted(essays)
    rho = spearmanr([wins[i] for i in ids], [-quality[i] for i in ids]).statistic
    # the full CJ pipeline must reach >= 0.6 with this judge; keep a clear margin here
    assert rho >= 0.8, rho
