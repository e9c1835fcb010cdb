"""`--config FILE` with the environment on top: merged key by key, and one-line errors."""

from __future__ import annotations

import json

import pytest

from flows.cli import main
from flows.folder import InputError
from flows.settings import deep_merge, load_settings
from schemas.topics import Topics


def write_config(tmp_path, data) -> str:
    path = tmp_path / "cjflow.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_one_topic_from_the_environment_keeps_the_other_topics_of_the_file(tmp_path, clean_env):
    cfg = write_config(tmp_path, {"kafka_brokers": "file:9092",
                                  "topics": {"requests": "file.requests", "results": "file.results"}})
    clean_env.setenv("CJFLOW_TOPICS__RESULTS", "env.results")
    s = load_settings(cfg)
    assert s.topics.requests == "file.requests"  # was reset to the default
    assert s.topics.results == "env.results"  # the environment wins for its key
    assert s.topics.deadletter == Topics().deadletter  # neither: the default
    assert s.kafka_brokers == "file:9092"


def test_kafka_config_from_the_environment_is_merged_into_the_file_key_by_key(tmp_path, clean_env):
    cfg = write_config(tmp_path, {"kafka_config": {"security.protocol": "SASL_SSL", "sasl.username": "file"}})
    clean_env.setenv("CJFLOW_KAFKA_CONFIG", json.dumps({"sasl.username": "env", "sasl.password": "pw"}))
    s = load_settings(cfg)
    assert s.kafka_config == {"security.protocol": "SASL_SSL", "sasl.username": "env", "sasl.password": "pw"}
    assert s.kafka_add_config() == s.kafka_config


def test_without_environment_the_file_holds_and_without_file_the_environment(tmp_path, clean_env):
    cfg = write_config(tmp_path, {"topics": {"requests": "file.requests"}, "judge_shards": 3})
    s = load_settings(cfg)
    assert (s.topics.requests, s.judge_shards) == ("file.requests", 3)
    clean_env.setenv("CJFLOW_JUDGE_SHARDS", "5")
    assert load_settings(cfg).judge_shards == 5
    assert load_settings().judge_shards == 5


def test_deep_merge():
    base = {"a": 1, "t": {"x": 1, "y": 2, "n": {"p": 1, "q": 2}}, "k": {"u": "1"}}
    over = {"t": {"y": 3, "n": {"q": 4}}, "k": "replaced", "new": {"z": 1}}
    assert deep_merge(base, over) == {
        "a": 1, "t": {"x": 1, "y": 3, "n": {"p": 1, "q": 4}}, "k": "replaced", "new": {"z": 1}
    }
    assert base["t"] == {"x": 1, "y": 2, "n": {"p": 1, "q": 2}}  # inputs untouched


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "config file not found: "),
        ("{not json", "is not valid JSON: Expecting property name"),
        ("[1, 2]", "must hold a JSON object, not list"),
        ('{"topics": {"requests": 5}}', "invalid setting in config file"),
    ],
)
def test_a_missing_or_malformed_config_file_is_a_one_line_error(tmp_path, clean_env, capsys, content, message):
    cfg = tmp_path / "cjflow.json"
    if content is not None:
        cfg.write_text(content)
    with pytest.raises(InputError, match=message.split(":")[0]):
        load_settings(cfg)
    rc = main(["recovery", "init", "--dir", str(tmp_path / "rec"), "--config", str(cfg)])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("cjflow: error: ") and message in err, err
    assert not (tmp_path / "rec").exists()


def test_a_malformed_kafka_config_in_the_environment_is_a_one_line_error(tmp_path, clean_env, capsys):
    clean_env.setenv("CJFLOW_KAFKA_CONFIG", "{not json")
    assert main(["recovery", "init", "--dir", str(tmp_path / "rec")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cjflow: error: invalid CJFLOW_ environment setting") and len(err.strip().splitlines()) == 1
