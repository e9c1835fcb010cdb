"""The dashboard and the alert rules use only metrics the code exports (telemetry/metrics.py)."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from deploy_helpers import DEPLOY, promql_metric_names, strip_promql

from telemetry.metrics import exported_names

DASHBOARD = DEPLOY / "grafana" / "cjflow.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
# Grafana's macros, replaced by a duration so the expressions can be parsed by promtool.
MACROS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def dashboard_panels() -> list[dict]:
    def walk(panels):
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))

    return list(walk(json.loads(DASHBOARD.read_text())["panels"]))


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) for every query of the dashboard, templating queries included."""
    out = [(p["title"], t["expr"]) for p in dashboard_panels() for t in p.get("targets", [])]
    for var in json.loads(DASHBOARD.read_text()).get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            out.append((f"variable {var['name']}", query if isinstance(query, str) else query.get("query", "")))
    return out


def alert_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [(r.get("alert") or r.get("record"), r["expr"]) for g in rules["groups"] for r in g["rules"]]


def test_extractor_ignores_strings_and_comments():
    expr = """sum(rate(cjflow_a_total{x="cjflow_b", y='it\\'s cjflow_x'}[5m])) # cjflow_c, the provider's
      or cjflow_d # trailing
      + cjflow_e:ratio"""
    assert promql_metric_names(expr) == {"cjflow_a_total", "cjflow_d", "cjflow_e:ratio"}
    assert "cjflow_b" not in strip_promql(expr)


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_metric_used_is_exported(source):
    exprs = dashboard_exprs() if source == "dashboard" else alert_exprs()
    assert exprs, f"no expressions found in the {source}"
    exported = exported_names()
    unknown = {
        (where, name) for where, expr in exprs for name in promql_metric_names(expr) if name not in exported
    }
    assert not unknown, f"{source} uses metrics the code does not export: {sorted(unknown)}"


def test_dashboard_covers_the_operations_questions():
    used = set().union(*(promql_metric_names(e) for _, e in dashboard_exprs()))
    wanted = {
        "judgements/s by outcome": "cjflow_judgements_received_total",
        "LLM latency": "cjflow_llm_latency_seconds_bucket",
        "rate-limit waits": "cjflow_rate_limit_wait_seconds_total",
        "in-flight calls": "cjflow_llm_in_flight",
        "open batches": "cjflow_active_batches",
        "batches waiting for judgements": "cjflow_batches_awaiting_judgements",
        "batch duration": "cjflow_batch_duration_seconds_bucket",
        "stop reasons": "cjflow_batches_finished_total",
        "reliability": "cjflow_batch_reliability_ssr_bucket",
        "cost per hour": "cjflow_llm_cost_usd_total",
        "dead letters": "cjflow_dead_letters_total",
        "strays": "cjflow_stray_judgements_total",
        "sink errors": "cjflow_sink_errors_total",
    }
    missing = {topic: name for topic, name in wanted.items() if name not in used}
    assert not missing, f"dashboard lacks panels for: {missing}"


def test_alerts_cover_the_failure_modes():
    rules = {r.get("alert") for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    for alert in (
        "CjflowJudgeErrorRatioHigh", "CjflowRateLimitStorm", "CjflowDeadLettersRising",
        "CjflowNoProgressOnOpenBatches", "CjflowBatchDurationHigh", "CjflowSinkErrors", "CjflowCostBurnRateHigh",
        "CjflowCallbackTopicRefused", "CjflowProcessDown", "CjflowStatefulSetNotReady",
    ):
        assert alert in rules


def test_dashboard_is_well_formed():
    data = json.loads(DASHBOARD.read_text())
    for key in ("title", "uid", "schemaVersion", "panels", "time", "templating"):
        assert key in data, key
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        pos = p["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, p["title"]
        for dy in range(pos["h"]):
            for dx in range(pos["w"]):
                cell = (pos["x"] + dx, pos["y"] + dy)
                assert cell not in cells, f"{p['title']!r} overlaps {cells[cell]!r}"
                cells[cell] = p["title"]
        if p["type"] == "row":
            continue
        assert p["targets"], f"panel {p['title']!r} has no query"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip(), p["title"]
            assert t["datasource"]["type"] == "prometheus"
            assert t["datasource"]["uid"] == "${datasource}"
    assert any(v["name"] == "datasource" and v["type"] == "datasource" for v in data["templating"]["list"])


def test_dashboard_queries_parse(promtool, tmp_path):
    """Every dashboard query is valid PromQL: promtool checks them as recording rules."""
    rules = []
    for i, (_, expr) in enumerate(dashboard_exprs()):
        for macro, value in MACROS.items():
            expr = expr.replace(macro, value)
        rules.append({"record": f"cjflow_dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
