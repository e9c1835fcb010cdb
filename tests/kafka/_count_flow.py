"""A tiny keyed-counting Kafka -> Kafka dataflow, run as a subprocess by test_broker.py.

    python -m bytewax.run tests/kafka/_count_flow.py:flow -r DIR -s 1 -b 0 [-w 2 | -i I -a "h:p;h:p"]

Configured by environment (so the import string stays plain):
  KT_BROKERS    bootstrap "host:port"
  KT_IN, KT_OUT input / output topics
  KT_TAIL       "1" (default) keep polling at end of topic; "0" stop at end of every partition
  KT_SLEEP      seconds to sleep per message (default 0), to make a run slow enough to kill mid-stream

Every input message is (key=K, value=anything). For each key the flow emits
key=K, value=b"<count>|<worker-pid>" to KT_OUT, so the test can check that after a crash and
restart the final count per key is exact and that every count 1..n appeared at least once.
"""

from __future__ import annotations

import os
import time

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow

BROKERS = [os.environ.get("KT_BROKERS", "127.0.0.1:9092")]
IN_TOPIC = os.environ.get("KT_IN", "kt-in")
OUT_TOPIC = os.environ.get("KT_OUT", "kt-out")
TAIL = os.environ.get("KT_TAIL", "1") == "1"
SLEEP = float(os.environ.get("KT_SLEEP", "0"))
PID = str(os.getpid()).encode()


def _count(state, _value):
    state = (state or 0) + 1
    return state, state


def _slow(msg):
    if SLEEP:
        time.sleep(SLEEP)
    return msg


flow = Dataflow("kt_count")
src = kop.input("in", flow, brokers=BROKERS, topics=[IN_TOPIC], tail=TAIL, batch_size=100)


def _raise(step_id, err):
    raise RuntimeError(f"Kafka consumer error: {err.err}")


op.inspect("errs", src.errs, _raise)  # kop.input drops consumer errors silently unless .errs is used
msgs = op.map("slow", src.oks, _slow)
keyed = op.key_on("key", msgs, lambda m: m.key.decode())
counts = op.stateful_map("count", keyed, _count)
out = op.map("to_sink", counts, lambda kv: KafkaSinkMessage(kv[0].encode(), b"%d|%s" % (kv[1], PID)))
kop.output("out", out, brokers=BROKERS, topic=OUT_TOPIC)
