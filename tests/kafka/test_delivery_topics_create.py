"""`cjflow topics create` leaves the replication factor to the broker unless told otherwise.

It used to create every topic with replication factor 1 (also from the k8s Job, which passes
no flags): one broker loss then lost data. The default is now -1 in the CreateTopics request,
i.e. the broker's default.replication.factor. Tansu (single node) accepts and ignores the
factor, so the request itself is recorded here.
"""

from __future__ import annotations

import uuid

import confluent_kafka.admin
import pytest

from flows.cli import main
from schemas.topics import Topics


@pytest.fixture
def recorded(kafka_broker, monkeypatch):
    """Every NewTopic that cjflow asks the (real) broker to create; unique topic names."""
    asked: list = []

    real = confluent_kafka.admin.AdminClient.create_topics

    def create_topics(self, new_topics, **kwargs):
        asked.extend(new_topics)
        return real(self, new_topics, **kwargs)

    monkeypatch.setattr(confluent_kafka.admin.AdminClient, "create_topics", create_topics)
    suffix = uuid.uuid4().hex[:8]
    monkeypatch.setenv("CJFLOW_KAFKA_BROKERS", kafka_broker)
    monkeypatch.setenv("CJFLOW_TOPIC_PARTITIONS", "1")
    for field in Topics.model_fields:
        monkeypatch.setenv(f"CJFLOW_TOPICS__{field.upper()}", f"rf-{field}-{suffix}")
    return asked


def test_topics_create_defaults_to_the_brokers_replication_factor(recorded, capsys):
    assert main(["topics", "create"]) == 0  # what the k8s Job runs
    assert len(recorded) == len(Topics.model_fields)
    assert {t.replication_factor for t in recorded} == {-1}
    out = capsys.readouterr().out
    assert out.count("created rf-") == len(Topics.model_fields)
    assert "replication factor broker default" in out


def test_topics_create_replication_factor_flag_overrides(recorded, capsys):
    assert main(["topics", "create", "--replication-factor", "3"]) == 0
    assert {t.replication_factor for t in recorded} == {3}
    assert "replication factor 3" in capsys.readouterr().out


def test_an_existing_topic_with_fewer_partitions_than_asked_is_reported(recorded, capsys):
    assert main(["topics", "create"]) == 0  # 1 partition each
    capsys.readouterr()
    assert main(["topics", "create", "--partitions", "3"]) == 0  # kept, not grown
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("exists")]
    assert len(lines) == len(Topics.model_fields)
    assert all("warning: 1 partitions, fewer than the 3 asked" in ln for ln in lines), lines
    assert main(["topics", "create", "--partitions", "1"]) == 0
    assert "warning" not in capsys.readouterr().out
