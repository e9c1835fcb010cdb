"""Default Kafka topic names (configurable in settings)."""

from __future__ import annotations

from pydantic import BaseModel


class Topics(BaseModel):
    requests: str = "cj.assessment.requests.v1"
    results: str = "cj.assessment.results.v1"
    comparison_requests: str = "cj.comparisons.requests.v1"
    comparison_results: str = "cj.comparisons.results.v1"
    resource_usage: str = "cj.resource.usage.v1"
    deadletter: str = "cj.deadletter.v1"
