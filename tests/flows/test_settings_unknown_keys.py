"""`--config FILE`: a key that is not a setting (a typo) is a one-line error, not ignored."""

from __future__ import annotations

import pytest
from pydantic import AliasChoices, BaseModel, Field

from flows.cli import main
from flows.folder import InputError
from flows.settings import load_settings, unknown_keys
from schemas.topics import Topics
from tests.flows.test_settings_merge import write_config


def test_a_top_level_typo_is_an_error_naming_the_key_and_the_close_setting(tmp_path, clean_env):
    cfg = write_config(tmp_path, {"kafka_broker": "prod-kafka:9092"})
    with pytest.raises(InputError, match=r"unknown setting 'kafka_broker' \(did you mean 'kafka_brokers'\?\)"):
        load_settings(cfg)


def test_a_nested_typo_is_an_error_with_its_path(tmp_path, clean_env):
    cfg = write_config(tmp_path, {"topics": {"requests": "r", "result": "x"}})
    with pytest.raises(InputError) as info:
        load_settings(cfg)
    assert "unknown setting 'topics.result' (did you mean 'results'?)" in str(info.value)
    assert "requests" not in str(info.value)  # the valid key is not reported


def test_every_unknown_key_is_named_on_one_line(tmp_path, clean_env, capsys):
    cfg = write_config(tmp_path, {"kafka_broker": "prod-kafka:9092", "databse_url": "postgresql+psycopg://db/cjflow",
                                  "topics": {"result": "x"}})
    rc = main(["recovery", "init", "--dir", str(tmp_path / "rec"), "--config", cfg])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith(f"cjflow: error: config file {cfg}: ") and len(err.strip().splitlines()) == 1, err
    for part in ("'kafka_broker' (did you mean 'kafka_brokers'?)", "'databse_url' (did you mean 'database_url'?)",
                 "'topics.result' (did you mean 'results'?)"):
        assert part in err, err
    assert not (tmp_path / "rec").exists()


def test_an_unknown_key_without_a_close_setting_gets_no_suggestion(tmp_path, clean_env):
    cfg = write_config(tmp_path, {"zzzz": 1})
    with pytest.raises(InputError) as info:
        load_settings(cfg)
    assert str(info.value).endswith("unknown setting 'zzzz'")


def test_a_valid_file_still_loads_and_free_form_objects_are_not_checked(tmp_path, clean_env):
    cfg = write_config(tmp_path, {
        "kafka_brokers": "prod-kafka:9092",
        "kafka_config": {"security.protocol": "SASL_SSL", "any.librdkafka.key": "1"},  # dict, not a model
        "database_url": "postgresql+psycopg://db/cjflow",
        "topics": {"results": "x", "deadletter": "dl"},
        "judge_shards": 3,
    })
    s = load_settings(cfg)
    assert (s.kafka_brokers, s.database_url, s.judge_shards) == ("prod-kafka:9092", "postgresql+psycopg://db/cjflow", 3)
    assert (s.topics.results, s.topics.deadletter, s.topics.requests) == ("x", "dl", Topics().requests)
    assert s.kafka_config["any.librdkafka.key"] == "1"


def test_environment_variables_that_are_not_settings_are_still_ignored(tmp_path, clean_env):
    clean_env.setenv("CJFLOW_ANTHROPIC_MODEL", "m")  # read by the judges, not a Settings field
    clean_env.setenv("CJFLOW_NOT_A_SETTING", "x")
    clean_env.setenv("CJFLOW_TOPICS__RESULT", "x")  # as before: not checked in the environment
    clean_env.setenv("CJFLOW_TOPICS__RESULTS", "env.results")
    assert load_settings().topics.results == "env.results"
    s = load_settings(write_config(tmp_path, {"topics": {"requests": "file.requests"}}))
    assert (s.topics.requests, s.topics.results) == ("file.requests", "env.results")


def test_aliases_and_field_names_are_both_accepted():
    class Inner(BaseModel):
        port: int = Field(default=1, alias="listen_port")

    class Outer(BaseModel):
        inner: Inner | None = None
        name: str = Field(default="", validation_alias=AliasChoices("name", "display_name"))
        free: dict[str, Inner] = Field(default_factory=dict)

    ok = {"inner": {"port": 2, "listen_port": 3}, "display_name": "n", "name": "n", "free": {"anything": {"x": 1}}}
    assert unknown_keys(Outer, ok) == []
    assert unknown_keys(Outer, {"inner": {"listen_prt": 1}, "nmae": "n"}) == [
        "unknown setting 'inner.listen_prt' (did you mean 'listen_port'?)",
        "unknown setting 'nmae' (did you mean 'name'?)",
    ]
