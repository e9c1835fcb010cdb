"""The production flows end to end through a real Kafka-protocol broker."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from bench.cluster import FlowCluster
from bench.instant_judge import ability
from bench.pipeline import JUDGE, batch_events
from schemas import AssessmentResult, BatchSettings, DeadLetter, EssaySubmitted, Judgement

SETTINGS = BatchSettings(budget=120, in_flight=8, judge_provider=JUDGE, max_mean_se=None, min_ssr=None)


def results_by_batch(cluster: FlowCluster, n: int, timeout: float = 240) -> dict[str, list[AssessmentResult]]:
    msgs = cluster.read(cluster.topics.results, until=n, timeout=timeout)
    out: dict[str, list[AssessmentResult]] = {}
    for m in msgs:
        r = AssessmentResult.model_validate_json(m.value)
        assert m.key == r.batch_id.encode()
        out.setdefault(r.batch_id, []).append(r)
    return out


def where_stalled(cluster: FlowCluster, events: list, results: dict) -> str:
    """For batches without a result: what each topic holds of them (requests asked,
    judgements answered, the last few), so a failure says where a batch stopped."""
    missing = sorted({e.batch_id for e in events} - set(results))
    lines = [f"no result for {missing}"]
    for topic in (cluster.topics.comparison_requests, cluster.topics.comparison_results):
        seen: dict[str, list] = {b: [] for b in missing}
        for msg in cluster.read(topic, until=10**9, timeout=5, distinct=False):
            d = json.loads(msg.value)
            if d.get("batch_id") in seen:
                seen[d["batch_id"]].append((msg.partition, d.get("comparison_id"), d.get("attempt"), d.get("winner")))
        lines += [f"{topic} {b}: {len(v)} messages, last {v[-4:]}" for b, v in seen.items()]
    return "\n".join(lines)


def check_results(events: list, results: dict[str, list[AssessmentResult]], n_batches: int) -> None:
    assert len(results) == n_batches, f"{len(results)} of {n_batches} batches finished"
    truth = {(e.batch_id, e.essay_id): ability(e.text) for e in events if isinstance(e, EssaySubmitted)}
    rhos = []
    for bid, rs in results.items():
        assert len({r.model_dump_json() for r in rs}) == 1, f"batch {bid}: results differ"
        r = rs[0]
        assert r.event_id == AssessmentResult.id_for(bid)
        assert r.status.value == "completed", r
        assert r.comparisons_valid == SETTINGS.budget
        assert sum(e.comparisons for e in r.essays) == 2 * r.comparisons_valid
        scores = [e.score for e in r.essays]
        true = [truth[(bid, e.essay_id)] for e in r.essays]
        rhos.append(spearmanr(scores, true).statistic)
    assert np.median(rhos) > 0.8 and min(rhos) > 0.5, rhos  # 4 noisy judgements per essay


@pytest.mark.parametrize("workers, processes", [(1, 1), (2, 1), (1, 2)], ids=["w1", "w2", "p2"])
def test_batches_complete_through_kafka(kafka_broker, tmp_path, workers, processes):
    cluster = FlowCluster(kafka_broker, tmp_path, workers=workers, processes=processes).setup()
    events = batch_events(20, 30, seed=workers * 10 + processes, settings=SETTINGS, prefix=f"e2e{workers}{processes}")
    cluster.start()
    try:
        cluster.publish(cluster.topics.requests, events)
        results = results_by_batch(cluster, 20)
        assert cluster.alive(), cluster.logs()
        assert len(results) == 20, where_stalled(cluster, events, results)
    finally:
        cluster.stop()
    check_results(events, results, 20)


def test_dead_letters_keep_the_original_and_the_flow_goes_on_and_callbacks_work(kafka_broker, tmp_path):
    from confluent_kafka import Producer

    cluster = FlowCluster(kafka_broker, tmp_path, partitions=1).setup()
    t = cluster.topics
    events = batch_events(1, 6, seed=5, settings=SETTINGS.model_copy(update={"budget": 15}), prefix="dl")
    bid = events[0].batch_id
    callback = f"{cluster.prefix}.callback"
    events[0] = events[0].model_copy(update={"callback_topic": callback})
    producer = Producer({"bootstrap.servers": kafka_broker})
    producer.produce(t.requests, key=b"x", value=b"{not json")
    producer.produce(t.requests, key=b"b", value=json.dumps({"event_type": "essay.submitted", "batch_id": "b"}).encode())
    stray = Judgement(
        event_id="j-unknown", batch_id="nobody", comparison_id="nobody#0", attempt=1, essay_a_id="a",
        essay_b_id="b", winner="A", provider="p", model="m",
    )
    producer.produce(t.comparison_results, key=b"nobody", value=stray.to_json())
    producer.produce(t.comparison_requests, key=b"q", value=b"\x00\x01binary")
    producer.flush(30)
    cluster.start()
    try:
        cluster.publish(t.requests, events)
        assert results_by_batch(cluster, 1, timeout=120).keys() == {bid}
        late = EssaySubmitted.create(bid, "late", "An essay for a finished batch.")
        cluster.publish(t.requests, [late])
        dead = [DeadLetter.model_validate_json(m.value) for m in cluster.read(t.deadletter, until=5, timeout=60, distinct=False)]
        called_back = cluster.read(callback, until=1, timeout=30)
    finally:
        cluster.stop()
    assert [AssessmentResult.model_validate_json(m.value).batch_id for m in called_back] == [bid]
    by_reason = {d.reason.split(":")[0]: d for d in dead}
    assert set(by_reason) >= {
        "invalid JSON", "invalid event", "judgement for an unknown batch", "essay for a finished batch"
    }, [d.reason for d in dead]
    # both flows dead-letter a bad JSON message (in either order): take the assessment flow's
    (bad_json,) = [d for d in dead if d.reason.startswith("invalid JSON") and d.source == t.requests]
    assert base64.b64decode(bad_json.original) == b"{not json"
    assert bad_json.source == t.requests and bad_json.partition == 0 and bad_json.offset == 0
    assert base64.b64decode(by_reason["judgement for an unknown batch"].original) == stray.to_json()
    assert by_reason["essay for a finished batch"].batch_id == bid
    assert any(d.source == t.comparison_requests for d in dead)  # the judge flow's own dead letter


@pytest.mark.slow
def test_kill_nine_ten_times_loses_nothing(kafka_broker, tmp_path, pg_url):
    """20 batches; both flows SIGKILLed at random moments 10 times and restarted from
    recovery: every batch finishes with one distinct result, no judgement is lost and no
    database row is duplicated."""
    import sqlalchemy as sa

    rng = np.random.default_rng(11)
    settings = SETTINGS.model_copy(update={"budget": 150, "in_flight": 4})
    cluster = FlowCluster(kafka_broker, tmp_path, snapshot_s=0.5, db_url=pg_url).setup()
    events = batch_events(20, 30, seed=99, settings=settings, prefix="kill")
    cluster.start()
    finished_at_kill = []
    try:
        cluster.publish(cluster.topics.requests, events)
        for _ in range(10):
            import time

            time.sleep(float(rng.uniform(0.3, 2.0)))
            victims = [("assessment",), ("judge",), ("assessment", "judge")][int(rng.integers(3))]
            cluster.kill(victims)
            finished_at_kill.append(len(results_by_batch(cluster, 20, timeout=0.5)))
            cluster.start(victims)
        results = results_by_batch(cluster, 20, timeout=300)
    finally:
        cluster.stop()
    assert len(results) == 20, cluster.logs()
    assert finished_at_kill[0] < 20 and sum(1 for f in finished_at_kill if f < 20) >= 3, finished_at_kill
    for bid, rs in results.items():
        assert len({r.model_dump_json() for r in rs}) == 1, f"batch {bid}: distinct results {len(rs)}"
        assert rs[0].status.value == "completed"
    engine = sa.create_engine(pg_url)
    with engine.connect() as con:
        valid = dict(con.execute(sa.text(
            "select batch_id, count(*) from judgements where winner in ('A','B') group by batch_id")).all())
        dup = con.execute(sa.text(
            "select count(*) from (select comparison_id from judgements where winner in ('A','B') "
            "group by comparison_id having count(*) > 1) d")).scalar()
        stored = dict(con.execute(sa.text("select batch_id, comparisons_valid from batch_results")).all())
    engine.dispose()
    assert dup == 0
    for bid, rs in results.items():
        assert valid[bid] == rs[0].comparisons_valid == stored[bid] == settings.budget
