"""Plug-in judges (`module:callable`): what they return is validated (anything but a winner
'A' or 'B', with an optional confidence in [0, 1], is an invalid_output judgement, never a
verdict), `assignment` is passed to a plug-in that takes it, and a spec that names no
callable is refused when the judge is built."""

from __future__ import annotations

import cj_test_plugins as plugins
import pytest
from judge_helpers import request, run

from judges.plugin import PluginJudge, PluginLoadError
from schemas import ErrorKind

ASSIGNMENT = "Write about your favourite season."  # what judge_helpers.request sets


def judge_one(spec: str, a: str = "[q=7] first", b: str = "[q=3] second"):
    return run(PluginJudge(spec).judge(request(0, a, b)))


def test_an_invalid_winner_is_invalid_output_not_a_verdict():
    j = judge_one("cj_test_plugins:bad_output")  # returns "maybe"
    assert j.winner == "error" and not j.is_valid
    assert j.error_kind is ErrorKind.INVALID_OUTPUT
    assert "'maybe'" in j.error_detail
    assert j.provider == "plugin" and j.model == "cj_test_plugins:bad_output"


@pytest.mark.parametrize(
    ("output", "detail"),
    [
        ({"winner": "C"}, "winner must be 'A' or 'B'"),
        ({"confidence": 0.9}, "winner must be 'A' or 'B'"),
        ({"winner": "A", "confidence": 1.5}, "confidence must be in [0, 1]"),
        (1, "expected 'A', 'B' or a dict"),
        (None, "expected 'A', 'B' or a dict"),
    ],
)
def test_other_invalid_outputs_are_invalid_output(output, detail):
    plugins.SCRIPTED[:] = [output]
    j = judge_one("cj_test_plugins:scripted")
    assert j.winner == "error" and j.error_kind is ErrorKind.INVALID_OUTPUT
    assert detail in j.error_detail


@pytest.mark.parametrize(
    ("output", "winner", "confidence"),
    [(" b ", "B", None), ({"winner": "a", "confidence": 0.25, "justification": "clearer"}, "A", 0.25)],
)
def test_valid_outputs_are_normalised(output, winner, confidence):
    plugins.SCRIPTED[:] = [output]
    j = judge_one("cj_test_plugins:scripted")
    assert j.is_valid and j.winner == winner and j.confidence == confidence and j.error_kind is None


@pytest.mark.parametrize("spec", ["cj_test_plugins:async_by_marker", "cj_test_plugins:sync_with_assignment"])
def test_a_plugin_that_takes_the_assignment_gets_it(spec):
    plugins.ASSIGNMENTS.clear()
    j = judge_one(spec, "[q=2] weak", "[q=8] strong")
    assert j.is_valid and j.winner == "B"
    assert plugins.ASSIGNMENTS == [ASSIGNMENT]


def test_a_plugin_that_does_not_take_the_assignment_is_called_without_it():
    j = judge_one("cj_test_plugins:by_marker")  # a two-argument function: TypeError if given more
    assert j.is_valid and j.winner == "A"


def test_a_spec_naming_no_callable_is_refused_when_built():
    with pytest.raises(PluginLoadError, match="'cj_test_plugins:NOT_CALLABLE' is not callable"):
        PluginJudge("cj_test_plugins:NOT_CALLABLE")
    with pytest.raises(PluginLoadError, match="has no attribute 'missing'"):
        PluginJudge("cj_test_plugins:missing")
    with pytest.raises(PluginLoadError, match="must be 'module:callable'"):
        PluginJudge("cj_test_plugins")


def test_a_plugin_that_raises_is_a_judge_error():
    j = judge_one("cj_test_plugins:broken")
    assert j.winner == "error" and j.error_kind is ErrorKind.JUDGE_ERROR
    assert "RuntimeError: plug-in bug" in j.error_detail
