"""Labelled counters the alerts read exist at 0 from the start, for every label value the code
can give them: prometheus_client exports a child only from its first increment, and a series
that appears at 1 (or 100) is invisible to increase() and rate() for that first step."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

from prometheus_client import REGISTRY

import telemetry.metrics as m
from cj.stopping import StopReason
from operators.codec import reason_label
from schemas.events import BatchStatus

ROOT = Path(__file__).resolve().parents[2]

# Where dead letters are written, and the functions whose return values are reasons.
DEAD_LETTER_MODULES = ("operators.codec", "operators.batch_machine", "flows.kafka_io", "sinks.sql")
REASON_FUNCTIONS = {"_reason", "_essay_problem"}


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_alerted_counters_start_at_zero_for_every_known_value():
    """What a fresh process exports before anything happened (the module is imported once)."""
    for outcome in ("valid", "error"):
        assert sample("cjflow_judgements_received_total", outcome=outcome) is not None, outcome
    for reason in ("new", "retry"):
        assert sample("cjflow_comparisons_requested_total", reason=reason) is not None, reason
    for reason in m.DEAD_LETTER_REASONS:
        assert sample("cjflow_dead_letters_total", reason=reason) is not None, reason
        assert sample("cjflow_dead_letters_created", reason=reason) is not None, reason  # the alerts read it
    for reason in m.CALLBACK_REASONS:
        assert sample("cjflow_callback_undeliverable_total", reason=reason) is not None, reason
    for kind in m.SINK_ERROR_KINDS:
        assert sample("cjflow_sink_errors_total", kind=kind) is not None, kind
    for status, stop in m.BATCH_ENDINGS:
        assert sample("cjflow_batches_finished_total", status=status, stop_reason=stop) is not None
    assert sample("cjflow_batches_awaiting_judgements") is not None


def test_statuses_and_stop_reasons_cover_the_code():
    assert {s.value for s in BatchStatus} == set(m.BATCH_STATUSES)
    stops = {stop for _, stop in m.BATCH_ENDINGS}
    assert {r.value for r in StopReason} <= stops
    source = (ROOT / "operators" / "batch_machine.py").read_text()
    machine_stops = set(re.findall(r'_finish\(\s*"(\w+)"', source)) | set(re.findall(r'stop_reason="(\w+)"', source))
    assert machine_stops, "no stop reasons found in operators/batch_machine.py"
    assert machine_stops <= stops, f"stop reasons not pre-created: {sorted(machine_stops - stops)}"


def test_sink_error_kinds_cover_the_classifier():
    from sinks import errors

    kinds = set(re.findall(r'Classified\(Severity\.\w+, "(\w+)"', inspect.getsource(errors)))
    for table in (errors._TRANSIENT_STATES, errors._TRANSIENT_CLASSES, errors._PERMANENT_CLASSES):
        kinds |= set(table.values())
    assert len(kinds) >= 5 and kinds <= set(m.SINK_ERROR_KINDS), sorted(kinds - set(m.SINK_ERROR_KINDS))


def test_callback_reasons_are_kafka_error_names():
    from confluent_kafka import KafkaError

    for name in m.CALLBACK_REASONS:
        assert KafkaError(getattr(KafkaError, name)).name() == name


def _literal_label(node: ast.expr, module: object, scope: ast.AST) -> str | None:
    """The metric label of a reason expression, when the source fixes it."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return reason_label(node.value)
    if isinstance(node, ast.Subscript):  # f"..."[:600]
        return _literal_label(node.value, module, scope)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):  # "invalid event: " + ...
        return _literal_label(node.left, module, scope)
    if isinstance(node, ast.JoinedStr):
        prefix = ""
        for part in node.values:
            if not isinstance(part, ast.Constant):
                break
            prefix += part.value
        if ":" in prefix:
            return reason_label(prefix)
        # no detail separator before the first placeholder: evaluate it with the module's names
        return reason_label(eval(compile(ast.Expression(node), "<reason>", "eval"), vars(module)))  # noqa: S307
    if isinstance(node, ast.Name):  # a local assigned a reason in the same function (not `x = x[:n]`)
        for sub in ast.walk(scope):
            if (
                isinstance(sub, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == node.id for t in sub.targets)
                and not any(isinstance(n, ast.Name) and n.id == node.id for n in ast.walk(sub.value))
            ):
                return _literal_label(sub.value, module, scope)
    return None


def _reason_exprs(tree: ast.AST):
    """(reason expression, enclosing function) for every dead letter the module writes."""
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Return) and fn.name in REASON_FUNCTIONS and node.value is not None:
                if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                    yield node.value, fn
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = getattr(f.value, "id", "") if isinstance(f, ast.Attribute) else ""
            if name in ("_dead", "_reject") and len(node.args) >= 2:  # (event, reason, ...)
                yield node.args[1], fn
            elif name == "create" and owner == "DeadLetter" and len(node.args) >= 2:
                yield node.args[1], fn
            elif name in ("DeadLetter", "labels") or (name == "labels" and owner == "DEAD_LETTERS"):
                for kw in node.keywords:
                    if kw.arg == "reason":
                        yield kw.value, fn


def test_every_dead_letter_reason_the_code_writes_is_pre_created():
    found: dict[str, str] = {}
    for name in DEAD_LETTER_MODULES:
        module = importlib.import_module(name)
        tree = ast.parse(inspect.getsource(module))
        for expr, fn in _reason_exprs(tree):
            label = _literal_label(expr, module, fn)
            if label is not None:
                found[label] = f"{name}.{fn.name}"
    assert len(found) >= 18, f"the scan lost its way: found only {sorted(found)}"
    missing = {label: where for label, where in found.items() if label not in m.DEAD_LETTER_REASONS}
    assert not missing, f"dead-letter reasons not pre-created in telemetry/metrics.py: {missing}"
