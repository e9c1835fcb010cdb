"""Bad Kafka input is dead-lettered at decoding, and counted in the dead-letter metric."""

from __future__ import annotations

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main
from prometheus_client import REGISTRY
from pydantic import TypeAdapter

from flows import kafka_io
from schemas import BatchOpened, DeadLetter


def _count(reason: str) -> float:
    return REGISTRY.get_sample_value("cjflow_dead_letters_total", {"reason": reason}) or 0.0


def test_decoding_dead_letters_are_counted_by_reason() -> None:
    good = BatchOpened.create("b1", 2)
    msgs = [
        KafkaSourceMessage(key=b"b1", value=good.to_json(), topic="t", partition=0, offset=0),
        KafkaSourceMessage(key=b"x", value=b"{not json", topic="t", partition=0, offset=1),
        KafkaSourceMessage(key=b"y", value=b"{not json either", topic="t", partition=0, offset=2),
    ]
    before = _count("invalid JSON")
    out: list = []
    flow = Dataflow("decode-test")
    stream = op.input("in", flow, TestingSource(msgs))
    op.output("out", kafka_io.decoded("decode", stream, TypeAdapter(BatchOpened)), TestingSink(out))
    run_main(flow)
    assert [type(e) for e in out] == [BatchOpened, DeadLetter, DeadLetter]
    assert all(d.reason.startswith("invalid JSON") for d in out[1:])
    assert _count("invalid JSON") - before == 2


def test_a_message_that_breaks_decoding_is_dead_lettered_with_the_error(monkeypatch, caplog) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("decoder bug")

    monkeypatch.setattr(kafka_io, "decode", broken)
    msg = KafkaSourceMessage(key=b"b7", value=b"{}", topic="t", partition=2, offset=41)
    out: list = []
    flow = Dataflow("decode-bug")
    stream = op.input("in", flow, TestingSource([msg]))
    op.output("out", kafka_io.decoded("decode", stream, TypeAdapter(BatchOpened)), TestingSink(out))
    run_main(flow)
    (dl,) = out
    assert isinstance(dl, DeadLetter) and dl.reason == "undecodable: RuntimeError: decoder bug"
    assert (dl.batch_id, dl.partition, dl.offset, dl.source) == ("b7", 2, 41, "t")
    assert "decoder bug" in caplog.text
