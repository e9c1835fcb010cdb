"""Process configuration: one pydantic settings model, read once from the environment
(prefix `CJFLOW_`) or a config file, and passed down. See docs/configuration.md."""

from __future__ import annotations

import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, AliasPath, BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from schemas.topics import Topics


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CJFLOW_", env_nested_delimiter="__", extra="ignore")

    # Kafka
    kafka_brokers: str = Field(default="localhost:9092", description="Bootstrap servers, comma separated.")
    kafka_config: dict[str, str] = Field(
        default_factory=dict, description="librdkafka settings passed through (SASL/SSL), JSON."
    )
    kafka_config_file: Path | None = Field(default=None, description="JSON file of librdkafka settings.")
    # No consumer group: Bytewax keeps the input offsets in its recovery snapshots, not in
    # committed group offsets, so a group id would name nothing a tool could read.
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
    # Requests name their judge, and building a plug-in imports and runs its code: the judge
    # flow runs only the built-in judges and the plug-ins an operator lists here.
    judge_plugins: str = Field(
        default="",
        description="Plug-in judges (`module:callable`, comma separated) the judge flow may run besides "
        "the built-in ones; a request naming another gets an error judgement.",
    )
    metrics_port: int = 9464

    @field_validator("kafka_config", mode="before")
    @classmethod
    def _json(cls, v: Any) -> Any:
        return json.loads(v) if isinstance(v, str) else v

    @field_validator("judge_plugins")
    @classmethod
    def _plugin_specs(cls, v: str) -> str:
        """A malformed entry stops the start, rather than failing every request for it later."""
        for spec in _plugin_list(v):
            module, _, attr = spec.partition(":")
            if not (module and attr):
                raise ValueError(f"{spec!r} is not 'module:callable'")
        return v

    def judge_plugin_specs(self) -> frozenset[str]:
        """The plug-in judges the judge flow may build (`judge_plugins`, split and trimmed)."""
        return frozenset(_plugin_list(self.judge_plugins))

    def kafka_add_config(self) -> dict[str, str]:
        """librdkafka pass-through settings: the file first, then the inline JSON."""
        from flows.folder import InputError

        conf: dict[str, str] = {}
        if self.kafka_config_file:
            try:
                conf.update(json.loads(self.kafka_config_file.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
                raise InputError(f"cannot read kafka_config_file {self.kafka_config_file}: {exc}") from None
        conf.update(self.kafka_config)
        return conf


def _plugin_list(value: str) -> list[str]:
    return [spec for spec in (s.strip() for s in value.split(",")) if spec]


def load_settings(config_file: Path | None = None) -> Settings:
    """Settings from a JSON config file (if given) overridden by the environment, key by key:
    `CJFLOW_TOPICS__RESULTS` replaces the file's results topic and keeps its other topics,
    and `CJFLOW_KAFKA_CONFIG` entries replace only the file's entries of the same name.

    A missing, unreadable or malformed config file is an InputError (one line), and so is a
    key of the file that is not a setting, at any level that is a settings model (`topics`):
    a typo would otherwise be ignored and its default used. The environment is not checked:
    other `CJFLOW_` variables (the judges' `CJFLOW_ANTHROPIC_*`, ...) are read elsewhere."""
    from flows.folder import InputError, first_error

    try:
        env = Settings()
    except ValidationError as exc:
        raise InputError(f"invalid CJFLOW_ environment setting: {first_error(exc)}") from None
    except SettingsError as exc:  # e.g. CJFLOW_KAFKA_CONFIG that is not JSON
        raise InputError(f"invalid CJFLOW_ environment setting: {exc}") from None
    if config_file is None:
        return env
    path = Path(config_file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read config file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"config file {path} must hold a JSON object, not {type(data).__name__}")
    unknown = unknown_keys(Settings, data)
    if unknown:
        raise InputError(f"config file {path}: " + "; ".join(unknown))
    try:
        return Settings.model_validate(deep_merge(data, env.model_dump(exclude_unset=True)))
    except ValidationError as exc:
        raise InputError(f"invalid setting in config file {path} or the environment: {first_error(exc)}") from None


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override` on top; nested dicts are merged key by key (override wins)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def unknown_keys(model: type[BaseModel], data: dict[str, Any], prefix: str = "") -> list[str]:
    """One message per key of `data` (a config file's object) that is not a field of `model`
    (by name or alias), with its dotted path and the closest field name if there is one;
    nested objects are checked where the field is itself a model. Models that allow extra
    keys are not checked."""
    if model.model_config.get("extra") == "allow":
        return []
    known: dict[str, str] = {}  # accepted key -> field name
    for name, field in model.model_fields.items():
        known[name] = name
        for alias in (field.alias, *_alias_names(field.validation_alias)):
            if alias:
                known[alias] = name
    out: list[str] = []
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append(f"unknown setting {where!r}{hint}")
            continue
        sub = _model_of(model.model_fields[known[key]].annotation)
        if sub is not None and isinstance(value, dict):
            out.extend(unknown_keys(sub, value, f"{where}."))
    return out


def _alias_names(alias: Any) -> list[str]:
    """The top-level keys a validation alias accepts (`str`, `AliasPath`, `AliasChoices`)."""
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasPath):
        return [alias.path[0]] if alias.path and isinstance(alias.path[0], str) else []
    if isinstance(alias, AliasChoices):
        return [n for choice in alias.choices for n in _alias_names(choice)]
    return []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (`Topics`, `Topics | None`), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [m for m in map(_model_of, typing.get_args(annotation)) if m is not None]
        return models[0] if len(models) == 1 else None
    if typing.get_origin(annotation) is typing.Annotated:
        return _model_of(typing.get_args(annotation)[0])
    return None
