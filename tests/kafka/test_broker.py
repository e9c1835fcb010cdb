"""The test broker and what our Kafka code relies on (findings in docs/kafka-notes.md)."""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka_test_broker import free_port, produce, read_topic, start_broker

pytestmark = pytest.mark.kafka

HERE = Path(__file__).resolve().parent
FLOW = f"{HERE / '_count_flow.py'}:flow"
PY = sys.executable


# --------------------------------------------------------------------------------- the broker


def test_start_and_stop_own_broker():
    t0 = time.monotonic()
    with start_broker() as b:
        host, port = b.bootstrap.split(":")
        assert host == "127.0.0.1" and int(port) > 0
        pid = b.pid
        assert b.is_running() or b.external
        md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=5)
        assert len(md.brokers) == 1
    assert time.monotonic() - t0 < 10
    if pid is not None:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        with pytest.raises(OSError):
            socket.create_connection((host, int(port)), timeout=0.5).close()
        b.stop()  # idempotent


def test_start_broker_on_busy_port_fails_fast():
    if os.environ.get("CJFLOW_TEST_KAFKA_BOOTSTRAP"):
        pytest.skip("external broker configured")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match="could not start"):
            start_broker(port=s.getsockname()[1], timeout=5)
        assert time.monotonic() - t0 < 5  # the broker exits (with code 0!) instead of hanging


def test_create_topics_with_partitions(kafka_broker, kafka_topics):
    a3, a1 = kafka_topics(("three", 3), ("one", 1))
    admin = AdminClient({"bootstrap.servers": kafka_broker})
    md = admin.list_topics(timeout=5)
    assert len(md.topics[a3].partitions) == 3
    assert len(md.topics[a1].partitions) == 1
    # Creating an existing topic fails with TOPIC_ALREADY_EXISTS, as on Apache Kafka:
    # `cjflow topics create` must treat that code as success.
    fut = admin.create_topics([NewTopic(a3, 3, 1)])[a3]
    with pytest.raises(KafkaException) as exc:
        fut.result(timeout=10)
    assert exc.value.args[0].name() == "TOPIC_ALREADY_EXISTS"


def test_keyed_produce_consume(kafka_broker, kafka_topics):
    (topic,) = kafka_topics(("keyed", 3))
    msgs = [(f"batch-{i % 7}", f"{i}", [("h", b"%d" % i)]) for i in range(70)]
    msgs += [(None, "no-key"), ("tomb", None)]
    produce(kafka_broker, topic, msgs)
    got = read_topic(kafka_broker, topic)
    assert len(got) == len(msgs)
    parts = collections.defaultdict(set)
    per_key = collections.defaultdict(list)
    for m in sorted(got, key=lambda m: (m.partition(), m.offset())):
        parts[m.key()].add(m.partition())
        if m.key() and m.key().startswith(b"batch-"):
            per_key[m.key()].append(int(m.value()))
            assert m.headers() == [("h", m.value())]
    # every key on exactly one partition, order within a key preserved
    assert all(len(p) == 1 for p in parts.values())
    assert all(v == sorted(v) and len(v) == 10 for v in per_key.values())
    assert {m.value() for m in got if m.key() is None} == {b"no-key"}
    assert [m.value() for m in got if m.key() == b"tomb"] == [None]


def test_consumer_group_commits_and_resumes(kafka_broker, kafka_topics):
    (topic,) = kafka_topics(("group", 2))
    produce(kafka_broker, topic, [(f"k{i}", f"{i}") for i in range(20)])
    group = f"g-{topic}"
    conf = {
        "bootstrap.servers": kafka_broker,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        # The broker answers the first JoinGroup after ~session.timeout.ms / 2 (23 s with the
        # librdkafka default 45 s); 6 s is the smallest value Apache Kafka accepts by default.
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    }
    c = Consumer(conf)
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + 15
    while len(got) < 12 and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m)
    assert len(got) == 12
    c.commit(asynchronous=False)  # commits the consumed positions
    committed = {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, p) for p in (0, 1)], timeout=5)}
    c.close()
    assert sum(o for o in committed.values() if o >= 0) == 12

    # A fresh consumer in the same group resumes after the committed offsets (assign + committed
    # positions: no group join needed, so no rebalance delay).
    c2 = Consumer({**conf, "enable.partition.eof": True})
    c2.assign(c2.committed([TopicPartition(topic, p) for p in (0, 1)], timeout=5))
    rest, eof = [], set()
    deadline = time.monotonic() + 10
    while len(eof) < 2 and time.monotonic() < deadline:
        m = c2.poll(0.2)
        if m is None:
            continue
        if m.error() is None:
            rest.append(m)
        else:
            eof.add(m.partition())
    c2.close()
    assert len(rest) == 8
    assert {m.value() for m in got} | {m.value() for m in rest} == {f"{i}".encode() for i in range(20)}


# ------------------------------------------------------------------------- Bytewax in-process


def test_bytewax_kafka_round_trip_run_main(kafka_broker, kafka_topics):
    import bytewax.operators as op
    from bytewax.connectors.kafka import KafkaSinkMessage
    from bytewax.connectors.kafka import operators as kop
    from bytewax.dataflow import Dataflow
    from bytewax.testing import run_main

    src, dst = kafka_topics(("rt-in", 3), ("rt-out", 2))
    produce(kafka_broker, src, [(f"k{i % 5}", f"{i}") for i in range(100)])
    flow = Dataflow("rt")
    s = kop.input("in", flow, brokers=[kafka_broker], topics=[src], tail=False)
    m = op.map("m", s.oks, lambda msg: KafkaSinkMessage(msg.key, msg.value + b"!"))
    kop.output("out", m, brokers=[kafka_broker], topic=dst)
    t0 = time.monotonic()
    run_main(flow)  # tail=False: ends at end of every partition
    assert time.monotonic() - t0 < 15
    got = read_topic(kafka_broker, dst)
    assert sorted(int(x.value()[:-1]) for x in got) == list(range(100))


def test_bytewax_empty_topic_without_tail_ends(kafka_broker, kafka_topics):
    import bytewax.operators as op
    from bytewax.connectors.kafka import operators as kop
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, run_main

    (src,) = kafka_topics(("empty", 2))
    flow = Dataflow("empty")
    s = kop.input("in", flow, brokers=[kafka_broker], topics=[src], tail=False)
    out: list = []
    op.output("o", s.oks, TestingSink(out))
    t0 = time.monotonic()
    run_main(flow)
    assert out == [] and time.monotonic() - t0 < 10


# -------------------------------------------------------------- Bytewax as `python -m bytewax.run`


def _run_args(*extra: str) -> list[str]:
    return [PY, "-m", "bytewax.run", FLOW, *extra]


def _spawn(args, env) -> subprocess.Popen:
    return subprocess.Popen(
        args, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # own process group: started with start_new_session
    proc.wait(timeout=10)


def _counts(bootstrap: str, topic: str):
    """Output of _count_flow: list of (key, count, pid)."""
    out = []
    for m in read_topic(bootstrap, topic):
        count, pid = m.value().split(b"|")
        out.append((m.key().decode(), int(count), pid.decode()))
    return out


def _check_exact(out, n_msgs: int, n_keys: int):
    final = collections.defaultdict(int)
    seen = collections.defaultdict(set)
    for k, c, _ in out:
        final[k] = max(final[k], c)
        seen[k].add(c)
    per_key = n_msgs // n_keys
    assert dict(final) == {f"k{i}": per_key for i in range(n_keys)}
    assert all(seen[k] == set(range(1, per_key + 1)) for k in final)  # nothing lost


def test_bytewax_tail_keeps_polling_empty_topic(kafka_broker, kafka_topics, bytewax_env):
    src, dst = kafka_topics(("tail-in", 2), ("tail-out", 1))
    env = {**bytewax_env, "KT_BROKERS": kafka_broker, "KT_IN": src, "KT_OUT": dst, "KT_TAIL": "1"}
    proc = _spawn(_run_args(), env)
    try:
        time.sleep(2.0)
        assert proc.poll() is None, proc.stdout.read()  # still polling the empty topic
        produce(kafka_broker, src, [(f"k{i % 4}", "x") for i in range(40)])
        deadline = time.monotonic() + 15
        out = []
        while time.monotonic() < deadline and len(out) < 40:
            time.sleep(0.3)
            out = _counts(kafka_broker, dst)
        _check_exact(out, 40, 4)
        assert proc.poll() is None  # and it keeps running after catching up
    finally:
        _kill(proc)


def test_bytewax_recovery_after_sigkill(kafka_broker, kafka_topics, bytewax_env, tmp_path):
    n_msgs, n_keys = 1500, 10
    src, dst = kafka_topics(("rec-in", 3), ("rec-out", 3))
    produce(kafka_broker, src, [(f"k{i % n_keys}", f"{i}") for i in range(n_msgs)])
    rdir = tmp_path / "recovery"
    rdir.mkdir()
    subprocess.run([PY, "-m", "bytewax.recovery", str(rdir), "1"], check=True, env=bytewax_env)
    env = {
        **bytewax_env,
        "KT_BROKERS": kafka_broker,
        "KT_IN": src,
        "KT_OUT": dst,
        "KT_TAIL": "0",  # the resumed run ends by itself at the end of the input
        "KT_SLEEP": "0.003",  # ~4.5 s of work in total, so there is a "mid-stream"
    }
    args = _run_args("-r", str(rdir), "-s", "1", "-b", "0")
    proc = _spawn(args, env)
    watch = Consumer({"bootstrap.servers": kafka_broker, "group.id": f"watch-{dst}", "enable.auto.commit": False})
    watch.assign([TopicPartition(dst, p, OFFSET_BEGINNING) for p in range(3)])
    try:
        # Kill once well past the first 1 s snapshot but before the end (~4.5 s of work).
        seen, deadline = 0, time.monotonic() + 20
        while seen < 700 and time.monotonic() < deadline and proc.poll() is None:
            seen += sum(1 for m in watch.consume(500, 0.05) if m.error() is None)
        assert proc.poll() is None, f"run ended before the kill: {proc.stdout.read()}"
        assert seen >= 700
    finally:
        _kill(proc)
        watch.close()
    before = _counts(kafka_broker, dst)
    assert 0 < len(before) < n_msgs

    rerun = subprocess.run(args, env=env, timeout=60, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    out = _counts(kafka_broker, dst)
    _check_exact(out, n_msgs, n_keys)  # exact final state, every count seen: at-least-once
    resumed = len(out) - len(before)
    assert resumed < n_msgs, "restart replayed everything: it did not resume from a snapshot"
    assert len(out) >= n_msgs  # duplicates allowed (the interval since the last snapshot)


def test_bytewax_two_workers(kafka_broker, kafka_topics, bytewax_env):
    src, dst = kafka_topics(("w2-in", 4), ("w2-out", 2))
    produce(kafka_broker, src, [(f"k{i % 20}", "x") for i in range(2000)])
    env = {**bytewax_env, "KT_BROKERS": kafka_broker, "KT_IN": src, "KT_OUT": dst, "KT_TAIL": "0"}
    r = subprocess.run(_run_args("-w", "2"), env=env, timeout=60, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    out = _counts(kafka_broker, dst)
    assert len(out) == 2000
    _check_exact(out, 2000, 20)  # a key split across workers would give partial counts


def test_bytewax_two_processes(kafka_broker, kafka_topics, bytewax_env):
    src, dst = kafka_topics(("p2-in", 4), ("p2-out", 2))
    produce(kafka_broker, src, [(f"k{i % 20}", "x") for i in range(2000)])
    env = {**bytewax_env, "KT_BROKERS": kafka_broker, "KT_IN": src, "KT_OUT": dst, "KT_TAIL": "0"}
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    procs = [_spawn(_run_args("-i", str(i), "-a", addresses), env) for i in range(2)]
    try:
        for p in procs:
            assert p.wait(timeout=60) == 0, p.stdout.read()
    finally:
        for p in procs:
            _kill(p)
    out = _counts(kafka_broker, dst)
    assert len(out) == 2000
    _check_exact(out, 2000, 20)
    pids_per_key = collections.defaultdict(set)
    for k, _, pid in out:
        pids_per_key[k].add(pid)
    assert all(len(p) == 1 for p in pids_per_key.values())  # each key lives in one process
    assert len(set().union(*pids_per_key.values())) == 2  # and both processes did work
