"""The metrics the embedded flow exports move with the work it does."""

from __future__ import annotations

import urllib.request

from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from bench.cluster import free_port
from bench.pipeline import JUDGE, batch_events
from flows.embedded import run_embedded
from judges.registry import build_judge
from schemas import BatchSettings
from telemetry.metrics import exported_names

PORT = free_port()
start_http_server(PORT, addr="127.0.0.1")


def scrape() -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=10).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def test_metrics_exist_and_count_the_run(tmp_path):
    before = scrape()
    settings = BatchSettings(budget=40, in_flight=4, judge_provider=JUDGE, max_mean_se=None)
    events = batch_events(3, 10, seed=3, settings=settings, prefix="metrics")
    collector = run_embedded(events, build_judge(JUDGE), db_url=f"sqlite:///{tmp_path / 'm.db'}")
    after = scrape()
    results = list(collector.results.values())
    assert len(results) == 3
    valid = sum(r.comparisons_valid for r in results)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("cjflow_judgements_received_total", outcome="valid") == valid == 120
    assert delta("cjflow_batches_finished_total") == 3
    assert delta("cjflow_batches_finished_total", status="completed", stop_reason="budget_spent") == 3
    assert delta("cjflow_comparisons_requested_total", reason="new") == valid
    assert delta("cjflow_batch_duration_seconds_count") == 3
    assert delta("cjflow_batch_comparisons_sum") == valid
    assert total(after, "cjflow_active_batches") == total(before, "cjflow_active_batches")
    assert delta("cjflow_sink_rows_written_total") > 0
    exported = {n for n, _ in after}
    assert {"cjflow_judgements_received_total", "cjflow_batches_finished_total", "cjflow_active_batches"} <= exported
    assert {n for n in exported if n.startswith("cjflow_")} <= exported_names()
