"""Prometheus metrics: requests and latency per route, rows generated, jobs by state.

Each app gets its own ``CollectorRegistry`` (not the global default) so several apps in one process
(the test suite) never collide on metric names. Routes are labelled by their template
(``/v1/models/{name}``), never by the raw path, so label cardinality stays bounded whatever
clients send; unmatched paths share one label.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self, job_counts: Callable[[], dict[str, int]]):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tssynth_http_requests", "HTTP requests served.", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "tssynth_http_request_duration_seconds",
            "Time from request to the end of the response body.",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.rows = Counter(
            "tssynth_generated_rows", "Synthetic rows produced (JSON, CSV and diagnostics).", ["model"],
            registry=self.registry,
        )
        self.registry.register(_JobStates(job_counts))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _JobStates(Collector):
    """Read at scrape time from the job store: the child processes update it, not this process."""

    def __init__(self, job_counts: Callable[[], dict[str, int]]):
        self._job_counts = job_counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("tssynth_jobs", "Training jobs by state.", labels=["state"])
        for state, count in self._job_counts().items():
            family.add_metric([state], count)
        yield family


class MetricsMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware) so a streamed export is timed until its last byte."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - start)
