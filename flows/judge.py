"""The judge dataflow: comparison requests in, rate-limited async LLM calls, judgements out.

    python -m bytewax.run flows.judge:flow -r RECOVERY_DIR -s 5
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from pydantic import TypeAdapter

from flows import kafka_io
from flows.settings import Settings, load_settings
from judges.base import Judge
from judges.registry import BUILTIN, build_judge, judge_key
from operators.judge_call import JudgeBuildError, build_cause, judge_comparisons, judge_spec
from schemas import ComparisonRequested, DeadLetter

REQUEST = TypeAdapter(ComparisonRequested)
log = logging.getLogger("cjflow")
PLUGINS_SETTING = "CJFLOW_JUDGE_PLUGINS"
# Distinct models one process calls per provider. Whoever publishes a batch names its model;
# each one gets its own judge, rate limiter and metric series (label `model`), so the set
# must stay small whatever the requests say.
MAX_MODELS_PER_PROVIDER = 8
MAX_FAILURES = 1_000  # judges that could not be built, remembered so as not to rebuild each time


class JudgePool:
    """One judge per (provider, model it calls) per process, built on first use: a request
    leaving the model to the default and one naming that model share a judge, so one limiter.

    Whoever publishes a batch names its judge, and building a plug-in imports and runs its
    code: only the built-in judges and the plug-ins in `plugins` (`CJFLOW_JUDGE_PLUGINS`)
    are built. A judge that is not allowed or cannot be built (unknown name, plug-in module
    that does not import, provider without its API key) raises `JudgeBuildError`; the judge
    operator turns that into an `error` judgement for the request. The failure is remembered
    for `retry_s` seconds, so a stream of requests for a broken judge does not rebuild it for
    each one; after that the next request tries again."""

    def __init__(
        self, retry_s: float = 30.0, clock: Callable[[], float] = time.monotonic, *, plugins: Iterable[str] = ()
    ) -> None:
        self._plugins = frozenset(plugins)
        self._keys: dict[tuple[str, str | None], tuple[str, str | None]] = {}  # as written -> judge_key
        self._judges: dict[tuple[str, str | None], Judge] = {}
        self._failed: dict[tuple[str, str | None], tuple[float, str]] = {}
        self._retry_s = retry_s
        self._clock = clock
        self._lock = threading.Lock()

    def _check_allowed(self, name: str) -> None:
        """Checked before `build_judge`, which would import any `module:callable`."""
        if name in BUILTIN or name in self._plugins:
            return
        if ":" in name:
            raise JudgeBuildError(f"plug-in not allowed: the judge flow runs only the plug-ins in {PLUGINS_SETTING}")
        raise JudgeBuildError(f"unknown judge {name!r}: use {', '.join(BUILTIN)} or a plug-in in {PLUGINS_SETTING}")

    def _check_room(self, key: tuple[str, str | None]) -> None:
        """Refuses a new model once the provider has MAX_MODELS_PER_PROVIDER others here.
        The deployment's default model (`CJFLOW_<P>_MODEL`) is always served, so requests
        naming made-up models cannot lock it out."""
        default = judge_key(key[0])
        if key[1] is None or key == default:
            return
        others = [k for k in self._judges if k[0] == key[0] and k[1] is not None and k != default]
        if len(others) >= MAX_MODELS_PER_PROVIDER:
            raise JudgeBuildError(
                f"too many {key[0]} models: this judge worker already calls {len(others)} besides "
                f"its default {default[1]}, at most {MAX_MODELS_PER_PROVIDER} (each gets its own "
                "rate limiter and metric series); use one of those"
            )

    def _remember_failure(self, spec: tuple[str, str | None], cause: str) -> None:
        """Failures are remembered for `retry_s`; expired ones are dropped, and at most
        MAX_FAILURES are kept (oldest dropped first), whatever names requests invent."""
        now = self._clock()
        self._failed.pop(spec, None)
        self._failed[spec] = (now + self._retry_s, cause)
        if len(self._failed) > MAX_FAILURES:
            for old in [k for k, (until, _) in self._failed.items() if until <= now]:
                del self._failed[old]
            while len(self._failed) > MAX_FAILURES:
                del self._failed[next(iter(self._failed))]

    def __call__(self, request: ComparisonRequested) -> Judge:
        spec = (request.judge_provider, request.judge_model)
        with self._lock:
            key = self._keys.get(spec)
            if key is not None and key in self._judges:
                return self._judges[key]
            failed = self._failed.get(spec)
            if failed is not None and self._clock() < failed[0]:
                raise JudgeBuildError(failed[1])
            try:
                self._check_allowed(spec[0])
                key = judge_key(*spec)
                if key not in self._judges:
                    self._check_room(key)
                judge = self._judges[key] if key in self._judges else build_judge(*spec)
            except Exception as exc:  # noqa: BLE001 - any build failure is the request's error, not the flow's
                cause = build_cause(exc)
                self._remember_failure(spec, cause)
                log.warning("cannot build judge %s: %s", judge_spec(request), cause)
                raise JudgeBuildError(cause) from None
            self._failed.pop(spec, None)
            self._keys[spec] = key  # only once built: names that fail leave nothing here
            self._judges[key] = judge
            return judge


def shard_key(request: ComparisonRequested, shards: int) -> str:
    """By comparison, not batch: each process's limiter holds 1/N of the deployment's rpm/tpm,
    so one batch keyed to one process would run at 1/N of the paid rate. All attempts of a
    comparison still meet on one shard, where a repeated attempt is recognised."""
    return kafka_io.shard_of(request.comparison_id, shards)


def build_flow(settings: Settings | None = None) -> Dataflow:
    settings = settings or load_settings()
    t = settings.topics
    flow = Dataflow("cjflow_judge")
    messages = op.input("in", flow, kafka_io.source(settings, [t.comparison_requests]))
    events = kafka_io.decoded("decode", messages, REQUEST)
    bad = op.filter("undecodable", events, lambda e: isinstance(e, DeadLetter))
    requests = op.filter("requests", events, lambda e: isinstance(e, ComparisonRequested))
    sharded = op.key_on("shard", requests, lambda r: shard_key(r, settings.judge_shards))
    judged = op.key_rm("unkey", judge_comparisons("judge", sharded, JudgePool(plugins=settings.judge_plugin_specs())))
    out = op.merge("all", judged, bad)
    op.output(
        "kafka", op.map("to_kafka", out, lambda e: kafka_io.to_message(e, kafka_io.judge_topic(e, settings))),
        kafka_io.sink(settings),
    )
    return flow


flow = build_flow()
