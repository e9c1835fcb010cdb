"""Every cjflow metric, defined once (the dashboard and alert tests read this list).

Labels are bounded: provider, model, outcome, reason, kind, table; never batch or essay ids.
Module-level metrics land in the default registry, which Bytewax's dataflow API server
also serves at /metrics.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)

# --- assessment ---------------------------------------------------------------------------
COMPARISONS_REQUESTED = Counter(
    "cjflow_comparisons_requested_total", "Comparison requests issued (each attempt)", ["reason"]
)
JUDGEMENTS_RECEIVED = Counter(
    "cjflow_judgements_received_total", "Judgements taken by the assessment flow", ["outcome"]
)
STRAYS = Counter("cjflow_stray_judgements_total", "Judgements for finished batches (dropped)")
DUPLICATES = Counter("cjflow_duplicate_judgements_total", "Judgements for already answered comparisons")
ACTIVE_BATCHES = Gauge("cjflow_active_batches", "Batches open (collecting or comparing) in this process")
# The no-progress alert's base: a batch still collecting essays waits for its publisher (up to an
# hour), not for the judges, so only batches with comparisons out count here.
BATCHES_AWAITING = Gauge(
    "cjflow_batches_awaiting_judgements",
    "Batches comparing with comparison requests in flight (waiting for judgements) in this process",
)
BATCHES_FINISHED = Counter("cjflow_batches_finished_total", "Batches finished", ["status", "stop_reason"])
BATCH_DURATION = Histogram(
    "cjflow_batch_duration_seconds", "Batch opened -> result", buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
)
COMPARISONS_PER_BATCH = Histogram(
    "cjflow_batch_comparisons", "Valid comparisons per finished batch", buckets=(5, 10, 25, 50, 100, 200, 350, 500, 1000, 5000)
)
BATCH_SSR = Histogram(
    "cjflow_batch_reliability_ssr", "Scale separation reliability of finished batches",
    buckets=(0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0),
)
DEAD_LETTERS = Counter("cjflow_dead_letters_total", "Inputs sent to the dead letters", ["reason"])

# --- judge ------------------------------------------------------------------------------------
LLM_CALLS = Counter("cjflow_llm_calls_total", "Judge calls finished", ["provider", "model", "outcome"])
LLM_LATENCY = Histogram(
    "cjflow_llm_latency_seconds", "Judge call latency (final attempt)", ["provider", "model"], buckets=_LATENCY_BUCKETS
)
LLM_TOKENS = Counter("cjflow_llm_tokens_total", "Tokens used", ["provider", "model", "kind"])
LLM_COST = Counter("cjflow_llm_cost_usd_total", "Cost of judge calls in US dollars", ["provider", "model"])
LLM_IN_FLIGHT = Gauge("cjflow_llm_in_flight", "Judge calls in flight", ["provider", "model"])
LLM_RETRIES = Counter("cjflow_llm_retries_total", "Judge call retries", ["provider", "model", "reason"])
RATE_LIMIT_WAIT = Counter(
    "cjflow_rate_limit_wait_seconds_total", "Time calls waited for the rate limiter", ["provider", "model"]
)
# provider: the built-in judge's name or "plugin" (the request's own name is the publisher's choice)
JUDGE_REQUESTS_EXPIRED = Counter(
    "cjflow_judge_requests_expired_total", "Comparison requests past their deadline on arrival (not judged)",
    ["provider"],
)

# reason: the Kafka error's name (a bounded set), never the topic (the batch's choice)
CALLBACKS_UNDELIVERABLE = Counter(
    "cjflow_callback_undeliverable_total",
    "Result copies for a batch's callback topic that Kafka did not take (the result is on the results topic)",
    ["reason"],
)

# --- sinks --------------------------------------------------------------------------------------
SINK_WRITES = Counter("cjflow_sink_rows_written_total", "Rows offered to the database", ["table"])
SINK_ERRORS = Counter("cjflow_sink_errors_total", "Database write errors", ["kind"])


ALL = (
    COMPARISONS_REQUESTED, JUDGEMENTS_RECEIVED, STRAYS, DUPLICATES, ACTIVE_BATCHES, BATCHES_AWAITING,
    BATCHES_FINISHED, BATCH_DURATION, COMPARISONS_PER_BATCH, BATCH_SSR, DEAD_LETTERS, LLM_CALLS, LLM_LATENCY, LLM_TOKENS,
    LLM_COST, LLM_IN_FLIGHT, LLM_RETRIES, RATE_LIMIT_WAIT, JUDGE_REQUESTS_EXPIRED, CALLBACKS_UNDELIVERABLE,
    SINK_WRITES, SINK_ERRORS,
)
_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created")}


def exported_names() -> set[str]:
    """Every sample name the metrics above can export (dashboards and alerts must use these)."""
    out: set[str] = set()
    for metric in ALL:
        for family in metric.describe():
            out.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return out

# --- judge modes (appended by the judges package) -----------------------------------------------
LLM_BUNDLE_SIZE = Histogram(
    "cjflow_llm_bundle_comparisons", "Comparisons per bundled judge call", ["provider", "model"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 50),
)
LLM_PROVIDER_BATCHES = Counter(
    "cjflow_llm_provider_batches_total", "Provider batch jobs (Message Batches / Batch API) by outcome",
    ["provider", "model", "outcome"],
)
ALL = ALL + (LLM_BUNDLE_SIZE, LLM_PROVIDER_BATCHES)  # type: ignore[assignment]

# --- label values known in advance ----------------------------------------------------------------
# prometheus_client exports a labelled child only from its first increment, so a series would
# appear already at 1 (or 100) and increase()/rate() would never see that first step: an alert on
# a reason's first events after every restart could not fire. Every label value known in advance
# is created at 0 here. Values that cannot be listed (a Kafka error name nobody expected, a
# provider/model pair, a table) still appear at their first increment; the alerts on
# per-reason counters also count a series created in the window (its `_created` sample) whole.
JUDGEMENT_OUTCOMES = ("valid", "error")
REQUEST_REASONS = ("new", "retry")  # first attempt, re-issue after an error or a deadline
BATCH_STATUSES = ("completed", "partial", "failed")
# (status, stop_reason) pairs a result can have: the stopping rule's reasons (cj.stopping) and the
# machine's own endings. "completed" needs every essay judged without too many errors.
_RULE_STOPS = ("precision_met", "no_informative_pairs", "budget_spent")
BATCH_ENDINGS = (
    tuple(("completed", r) for r in _RULE_STOPS)
    + tuple(("partial", r) for r in (*_RULE_STOPS, "too_many_errors", "internal_error"))
    + tuple(("failed", r) for r in (*_RULE_STOPS, "too_many_errors", "internal_error", "too_few_essays", "rejected"))
)
# Dead-letter reasons as operators.codec.reason_label gives them (the text before any detail);
# tests/telemetry checks this against every reason the code writes.
DEAD_LETTER_REASONS = (
    # decoding (operators/codec.py, flows/kafka_io.py)
    "empty message", "invalid JSON", "invalid event", "message key is not the batch id",
    "contains a NUL character (\\x00), which the database cannot s", "undecodable", "kafka consumer error",
    # the batch machine (operators/batch_machine.py)
    "batch never opened", "batch too large", "invalid grade scale", "batch rejected", "essay for a finished batch",
    "too many essays before the batch was opened", "essay after the batch started comparing",
    "duplicate essay id", "empty essay text", "essay longer than 60000 characters",
    "anchor grade given but the batch has no grade scale", "unknown anchor grade",
    "judgement for an unknown batch", "judgement for an unknown comparison", "internal error",
    # the database sink (sinks/sql.py)
    "database rejected the record",
)
# KafkaError names a callback topic's refusal usually has (missing topic, ACL, size, broker down).
CALLBACK_REASONS = (
    "UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC", "TOPIC_AUTHORIZATION_FAILED", "TOPIC_EXCEPTION", "MSG_SIZE_TOO_LARGE",
    "RECORD_LIST_TOO_LARGE", "POLICY_VIOLATION", "NOT_ENOUGH_REPLICAS", "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    "_MSG_TIMED_OUT",
)
SINK_ERROR_KINDS = ("connection", "serialization", "deadlock", "unavailable", "constraint", "data", "fatal")


def _precreate() -> None:
    for outcome in JUDGEMENT_OUTCOMES:
        JUDGEMENTS_RECEIVED.labels(outcome)
    for reason in REQUEST_REASONS:
        COMPARISONS_REQUESTED.labels(reason)
    for status, stop in BATCH_ENDINGS:
        BATCHES_FINISHED.labels(status, stop)
    for reason in DEAD_LETTER_REASONS:
        DEAD_LETTERS.labels(reason)
    for reason in CALLBACK_REASONS:
        CALLBACKS_UNDELIVERABLE.labels(reason)
    for kind in SINK_ERROR_KINDS:
        SINK_ERRORS.labels(kind)


_precreate()
