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
    COMPARISONS_REQUESTED, JUDGEMENTS_RECEIVED, STRAYS, DUPLICATES, ACTIVE_BATCHES, BATCHES_FINISHED,
    BATCH_DURATION, COMPARISONS_PER_BATCH, BATCH_SSR, DEAD_LETTERS, LLM_CALLS, LLM_LATENCY, LLM_TOKENS,
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
