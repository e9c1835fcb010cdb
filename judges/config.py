"""Configuration of the LLM judges, one settings model per provider, read from the
environment with the prefix `CJFLOW_ANTHROPIC_` or `CJFLOW_OPENAI_` (see docs/judges.md).
API keys come from the providers' usual variables or a mounted secret file, never logged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROVIDERS = ("anthropic", "openai")
DEFAULT_MODELS = {"anthropic": "claude-haiku-4-5", "openai": "gpt-5.1"}
KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
KEY_FILE_ENV = {"anthropic": "ANTHROPIC_API_KEY_FILE", "openai": "OPENAI_API_KEY_FILE"}


class ProviderSettings(BaseSettings):
    """How one provider is called. Limits are for the whole deployment and are split
    across `processes` (each process has one limiter per provider and model)."""

    model_config = SettingsConfigDict(extra="ignore", env_prefix="CJFLOW_PROVIDER_")

    model: str | None = Field(default=None, description="Default model (per provider if unset).")
    base_url: str | None = Field(default=None, description="API base URL; unset: the SDK's env var or default.")
    api_key_file: Path | None = Field(default=None, description="File holding the API key (a mounted secret).")
    timeout_s: float = Field(default=60.0, gt=0, description="Per attempt.")
    max_tokens: int = Field(default=1024, ge=16, description="Output token cap per comparison.")
    temperature: float | None = Field(default=None, ge=0, le=2, description="Unset: the model's default.")
    reasoning_effort: str | None = Field(default=None, description="OpenAI reasoning models only.")
    http_transport: Literal["auto", "httpx", "aiohttp"] = Field(
        default="auto", description="auto: aiohttp when installed (less CPU per call), else httpx."
    )
    # limits
    rpm: float | None = Field(default=None, gt=0, description="Requests per minute, whole deployment.")
    tpm: float | None = Field(default=None, gt=0, description="Tokens per minute, whole deployment.")
    max_concurrency: int = Field(default=2000, ge=1, description="Calls open at once, per process.")
    processes: int | None = Field(
        default=None, ge=1, description="Processes sharing the limits (default: BYTEWAX_REPLICAS or 1)."
    )
    burst_s: float = Field(default=1.0, gt=0, description="Bucket capacity, in seconds of the rate.")
    token_headroom: float = Field(default=0.05, ge=0, lt=1, description="Fraction of tpm kept unused.")
    expected_output_tokens: int = Field(default=200, ge=1, description="Output estimate before a call.")
    # retries
    max_attempts: int = Field(default=8, ge=1)
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    retry_deadline_s: float = Field(default=600.0, gt=0, description="Give up retrying after this long.")
    invalid_output_retries: int = Field(default=1, ge=0)
    # modes
    mode: Literal["single", "bundle", "batch"] = "single"
    bundle_size: int = Field(default=8, ge=1, le=50)
    bundle_window_ms: float = Field(default=50.0, ge=0)
    batch_window_s: float = Field(default=5.0, ge=0, description="Collect requests this long per provider batch.")
    batch_max_requests: int = Field(default=10_000, ge=1)
    batch_poll_s: float = Field(default=30.0, gt=0)

    @classmethod
    def for_provider(cls, provider: str, **overrides: object) -> ProviderSettings:
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}")
        return cls(_env_prefix=f"CJFLOW_{provider.upper()}_", **overrides)  # type: ignore[call-arg,arg-type]

    def share(self) -> int:
        if self.processes:
            return self.processes
        try:
            return max(1, int(os.environ.get("BYTEWAX_REPLICAS", "1")))
        except ValueError:
            return 1


def resolve_api_key(provider: str, settings: ProviderSettings, api_key: str | None = None) -> SecretStr:
    """The key from the argument, `<PROVIDER>_API_KEY`, or a file (`<PROVIDER>_API_KEY_FILE`
    or `CJFLOW_<PROVIDER>_API_KEY_FILE`). A readable ValueError when there is none."""
    env = KEY_ENV[provider]
    key = api_key or os.environ.get(env)
    file_env = KEY_FILE_ENV[provider]
    path = settings.api_key_file or (Path(os.environ[file_env]) if os.environ.get(file_env) else None)
    if not key and path is not None:
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read the {provider} API key file {path}: {exc.strerror}") from None
    if not key:
        raise ValueError(f"no API key for the {provider} judge: set {env} or {env}_FILE (a file holding the key)")
    return SecretStr(key)
