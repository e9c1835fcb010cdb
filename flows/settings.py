"""Process configuration: one pydantic settings model, read once from the environment
(prefix `CJFLOW_`) or a config file, and passed down. See docs/configuration.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import Topics


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CJFLOW_", env_nested_delimiter="__", extra="ignore")

    # Kafka
    kafka_brokers: str = Field(default="localhost:9092", description="Bootstrap servers, comma separated.")
    kafka_config: dict[str, str] = Field(
        default_factory=dict, description="librdkafka settings passed through (SASL/SSL), JSON."
    )
    kafka_config_file: Path | None = Field(default=None, description="JSON file of librdkafka settings.")
    consumer_group: str = "cjflow"
    topics: Topics = Topics()
    topic_partitions: int = 6
    # Storage
    database_url: str | None = Field(default=None, description="SQLAlchemy URL (postgresql+psycopg://...).")
    database_password_file: Path | None = None
    # Recovery and runtime
    recovery_dir: Path | None = None
    recovery_partitions: int = 4
    snapshot_interval_s: float = 5.0
    backup_interval_s: float = 0.0
    judge_shards: int = 16
    metrics_port: int = 9464

    @field_validator("kafka_config", mode="before")
    @classmethod
    def _json(cls, v: Any) -> Any:
        return json.loads(v) if isinstance(v, str) else v

    def kafka_add_config(self) -> dict[str, str]:
        """librdkafka pass-through settings: the file first, then the inline JSON."""
        conf: dict[str, str] = {}
        if self.kafka_config_file:
            conf.update(json.loads(self.kafka_config_file.read_text()))
        conf.update(self.kafka_config)
        return conf


def load_settings(config_file: Path | None = None) -> Settings:
    """Settings from a JSON config file (if given) overridden by the environment."""
    if config_file is None:
        return Settings()
    data = json.loads(Path(config_file).read_text())
    env = Settings()
    explicit = env.model_dump(exclude_unset=True)
    return Settings.model_validate({**data, **explicit})
