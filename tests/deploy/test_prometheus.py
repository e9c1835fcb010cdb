"""Alert rules: promtool's syntax check and unit tests (deploy/prometheus/alerts_test.yml)."""

from __future__ import annotations

import subprocess

from deploy_helpers import DEPLOY

RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, cwd=RULES.parent)


def test_promtool_check_rules(promtool):
    out = run(promtool, "check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_test_rules(promtool):
    out = run(promtool, "test", "rules", str(RULE_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_unit_test():
    import yaml

    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    tested = {
        case["alertname"]
        for t in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in t.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts <= tested, f"alerts never shown firing in alerts_test.yml: {sorted(alerts - tested)}"


def test_alerts_have_severity_and_text():
    import yaml

    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_statefulset_alert_names_every_cjflow_statefulset(example):
    """`up` has no series for a Pending pod: the kube-state-metrics alert must cover every flow."""
    import re

    import yaml
    from deploy_helpers import by_kind

    rule = next(
        r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
        if r.get("alert") == "CjflowStatefulSetNotReady"
    )
    patterns = set(re.findall(r'statefulset=~"([^"]+)"', rule["expr"]))
    assert len(patterns) == 1, rule["expr"]
    pattern = re.compile(patterns.pop())
    names = [d["metadata"]["name"] for d in by_kind(example, "StatefulSet")]
    assert names and all(pattern.fullmatch(n) for n in names), names
