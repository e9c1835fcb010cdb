"""Every metric the code exports is documented (it once drifted: eight assessment metrics were
in no doc), and the assessment metrics table in docs/deploy.md names each metric's labels."""

from __future__ import annotations

import re
from pathlib import Path

from telemetry.metrics import ALL

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
# Documented with their own subsystem (docs/judges.md, docs/storage.md), not in deploy.md's table.
ELSEWHERE = ("cjflow_llm_", "cjflow_rate_limit_", "cjflow_judge_", "cjflow_sink_")


def documented_name(family) -> str:
    """The name a reader queries: counters with `_total`, histograms by their base name."""
    return family.name + "_total" if family.type == "counter" else family.name


def families():
    for metric in ALL:
        for family in metric.describe():
            yield metric, family


def docs_text() -> str:
    return "\n".join(p.read_text() for p in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"])


def table_rows() -> dict[str, str]:
    """metric name -> its row in deploy.md's metrics tables."""
    rows = {}
    for line in DEPLOY_DOC.read_text().splitlines():
        found = re.match(r"\|\s*`(cjflow_\w+)`\s*\|", line)
        if found:
            rows[found.group(1)] = line
    return rows


def test_every_exported_metric_is_documented():
    text = docs_text()
    missing = [
        documented_name(f) for _, f in families() if not re.search(rf"\b{re.escape(documented_name(f))}\b", text)
    ]
    assert not missing, f"metrics in telemetry/metrics.py that no doc names: {missing}"


def test_assessment_and_kafka_metrics_have_a_row_with_their_type_and_labels():
    rows = table_rows()
    for metric, family in families():
        name = documented_name(family)
        if name.startswith(ELSEWHERE):
            continue
        assert name in rows, f"{name} has no row in the metrics table of docs/deploy.md"
        cells = [c.strip() for c in rows[name].strip("|").split("|")]
        assert cells[1] == family.type, (name, cells[1])
        for label in metric._labelnames:
            assert f"`{label}`" in cells[2], f"{name}: label {label} not described"


def test_the_table_names_only_real_metrics():
    names = {documented_name(f) for _, f in families()}
    assert set(table_rows()) <= names, sorted(set(table_rows()) - names)
