"""Operations endpoints and Prometheus metrics of one ``loupe serve`` process (docs/operations.md).

``/readyz`` says whether the database answers and a model is loaded; ``/metrics`` is Prometheus text, for
loopback clients or a bearer of ``LOUPE_METRICS_TOKEN``. Each process counts its own requests, jobs and
answers: Prometheus scrapes every process. Labels are route templates and fixed words only — never a raw
path, a user, a case or a file name. The same middleware gives each request the id its log lines carry.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from sqlalchemy import text
from starlette.routing import BaseRoute, Match, Mount

from loupe.core.errors import ModelUnavailable
from loupe.core.jobs import finished_counts, job_counts
from loupe.core.vlm.base import RunRecord

from ..logformat import ACCESS_LOGGER, request_id, route
from ..service import LoupeService
from .gate import ip_of

Scope = MutableMapping[str, Any]
TOKEN_ENV = "LOUPE_METRICS_TOKEN"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
FORWARDED = (b"x-forwarded-for", b"forwarded", b"x-real-ip")  # a proxy on this host passing someone on
LOGIN_ROUTES = frozenset({"/login", "/login/"})
LOGIN_RESULTS = {200: "success", 303: "success", 401: "failure", 429: "throttled"}
JOB_OUTCOMES = ("ok", "refused", "failed", "cancelled")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
UNMATCHED = "unmatched"

log = logging.getLogger(__name__)
access = logging.getLogger(ACCESS_LOGGER)
disable_created_metrics()  # no *_created series beside each counter: fewer lines, nothing lost


class Metrics:
    """The metrics of one app (one registry: a test process may run several apps, each counts its own)."""

    def __init__(self, service: LoupeService, token: str | None = None) -> None:
        self.registry = registry = CollectorRegistry()
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.routes: list[BaseRoute] = []
        self.requests = Counter("loupe_http_requests", "HTTP requests answered, by method, route template and "
                                "status class", ["method", "route", "status"], registry=registry)
        self.latency = Histogram("loupe_http_request_duration_seconds", "Time to answer a request (a streamed "
                                 "answer: until its end), by route template", ["route"], registry=registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.in_progress = Gauge("loupe_http_requests_in_progress", "Requests being answered now",
                                 registry=registry)
        self.logins = Counter("loupe_logins", "Login attempts by result (success, failure, throttled)",
                              ["result"], registry=registry)
        self.answers = Counter("loupe_answers", "Answers generated and saved", registry=registry)
        self.ttft = Histogram("loupe_answer_time_to_first_token_seconds", "Time from the question reaching the "
                              "model to its first answer token", registry=registry,
                              buckets=(0.05, 0.1, 0.15, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64))
        self.decode = Histogram("loupe_answer_decode_tokens_per_second", "Decode speed of each answer "
                                "(tokens after the first / their time)", registry=registry,
                                buckets=(1, 2, 5, 10, 20, 30, 50, 100, 200, 400, 800))
        self.tokens = Counter("loupe_answer_tokens_generated", "Answer tokens generated", registry=registry)
        self.prompt_tokens = Counter("loupe_answer_prompt_tokens", "Prompt tokens of the answers (images "
                                     "included)", registry=registry)
        self.conversations = Counter("loupe_conversation_cache_answers", "Answers by whether they continued "
                                     "the case's cached conversation (hit) or read it afresh (miss)", ["result"],
                                     registry=registry)
        for result in ("success", "failure", "throttled"):
            self.logins.labels(result)
        for result in ("hit", "miss"):
            self.conversations.labels(result)
        registry.register(LiveCollector(service))
        ProcessCollector(registry=registry)

    # -- what is counted -----------------------------------------------------------------------
    def observe_request(self, method: str, template: str, status: int, seconds: float) -> None:
        self.requests.labels(method, template, f"{status // 100}xx").inc()
        self.latency.labels(template).observe(seconds)
        if method == "POST" and template in LOGIN_ROUTES and status in LOGIN_RESULTS:
            self.logins.labels(LOGIN_RESULTS[status]).inc()

    def observe_answer(self, run: RunRecord) -> None:
        self.answers.inc()
        self.ttft.observe(run.time_to_first_token_s)
        if run.tokens_per_s > 0:
            self.decode.observe(run.tokens_per_s)
        self.tokens.inc(run.output_tokens)
        self.prompt_tokens.inc(run.prompt_tokens)
        self.conversations.labels("hit" if (run.extra or {}).get("reused_tokens") else "miss").inc()

    def template(self, scope: Scope) -> str:
        """The route template a request matches (``/case-assets/{asset_id}``), never its raw path."""
        return _match(self.routes, scope) or UNMATCHED

    # -- who may read them ---------------------------------------------------------------------
    def may_scrape(self, scope: Scope) -> bool:
        """A bearer of the token, or a loopback client not relayed by a proxy on this host."""
        headers = scope.get("headers", [])
        if self.token:
            sent = [v.decode("latin-1") for k, v in headers if k.lower() == b"authorization"]
            if len(sent) == 1 and hmac.compare_digest(sent[0].encode(), f"Bearer {self.token}".encode()):
                return True
        if any(k.lower() in FORWARDED for k, _ in headers):
            return False
        client = scope.get("client")
        return bool(client) and _is_loopback(str(client[0]))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class LiveCollector:
    """Read at each scrape: worker jobs (running, queued, finished), the model slot, the feature cache."""

    def __init__(self, service: LoupeService) -> None:
        self.service = service

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        running, queued = job_counts()  # this process's jobs (every runner shares its worker pools)
        yield GaugeMetricFamily("loupe_jobs_running", "Worker jobs running now", value=running)
        yield GaugeMetricFamily("loupe_jobs_queued", "Worker jobs waiting for a worker", value=queued)
        finished = CounterMetricFamily("loupe_jobs_finished", "Worker jobs ended, by outcome (ok; refused by a "
                                       "budget; failed: time, memory or crash; cancelled)", labels=["outcome"])
        counts = finished_counts()
        for outcome in JOB_OUTCOMES:
            finished.add_metric([outcome], counts.get(outcome, 0))
        yield finished
        status = self.service.slot.status
        yield GaugeMetricFamily("loupe_model_ready", "1 when a model is loaded and answering",
                                value=int(status.state == "ready"))
        yield GaugeMetricFamily("loupe_model_demo", "1 when the loaded model has random (demo) weights",
                                value=int(status.state == "ready" and status.demo))
        yield from self._feature_cache()

    def _feature_cache(self) -> Iterator[Metric]:
        try:
            cache = getattr(self.service.slot.get(), "features", None)
        except ModelUnavailable:
            cache = None
        if cache is None:
            return
        lookups = CounterMetricFamily("loupe_feature_cache_lookups", "Image-feature cache lookups of the loaded "
                                      "model, by result (memory_hit, disk_hit, miss)", labels=["result"])
        for result, value in (("memory_hit", cache.hits), ("disk_hit", cache.disk_hits), ("miss", cache.misses)):
            lookups.add_metric([result], value)
        yield lookups


class Observed:
    """ASGI middleware: counts and times each HTTP request by route template, and names it for the logs."""

    def __init__(self, app: Callable, metrics: Metrics, trusted: Callable[[Scope], bool]) -> None:
        self.app = app
        self.metrics = metrics
        self.trusted = trusted  # whether the peer is our proxy (its X-Request-ID is taken)

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method = scope.get("method", "")
        method = method if method in METHODS else "other"
        template = self.metrics.template(scope)
        rid = self._request_id(scope)
        marks = request_id.set(rid), route.set(template)
        status = 500  # if the app ends without answering
        started = time.perf_counter()

        async def sending(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.in_progress.dec()
            elapsed = time.perf_counter() - started
            self.metrics.observe_request(method, template, status, elapsed)
            access.info("%s %s %d %.3f s", method, template, status, elapsed)
            request_id.reset(marks[0])
            route.reset(marks[1])

    def _request_id(self, scope: Scope) -> str:
        sent = [v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"x-request-id"]
        if len(sent) == 1 and REQUEST_ID.match(sent[0]) and self.trusted(scope):
            return sent[0]
        return uuid.uuid4().hex[:16]


def readiness(service: LoupeService) -> dict[str, str]:
    """What is not ready, by part: ``database`` (does not answer) and ``model`` (loading or failed)."""
    problems: dict[str, str] = {}
    try:
        with service.store.sessions() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; its text may name hosts and paths
        log.warning("readiness: the database did not answer (%s)", type(exc).__name__)
        problems["database"] = "unreachable"
    status = service.slot.status
    if status.state != "ready":
        problems["model"] = status.state  # loading | failed (its reason is on the page, not here)
        if status.state == "failed" and service.settings.model_server:  # the server may be up by now
            service.slot.load(service.settings.model, background=True)
    elif service.settings.model_server and not _server_answers(service):
        problems["model"] = "server unreachable"
    return problems


def _server_answers(service: LoupeService) -> bool:
    try:
        return service.slot.get().ready()  # type: ignore[attr-defined] - a RemoteVLM
    except ModelUnavailable:
        return False


def ops_router(service: LoupeService, metrics: Metrics) -> APIRouter:
    """``/readyz`` and ``/metrics`` (``/healthz`` is in pages.py); the gate lets all three through."""
    router = APIRouter()

    @router.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        problems = readiness(service)
        if problems:
            return JSONResponse({"status": "not ready", "not_ready": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    @router.get("/metrics", include_in_schema=False)
    def scrape(request: Request) -> Response:
        if not metrics.may_scrape(request.scope):
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return router


def instrument(api: FastAPI, service: LoupeService, metrics: Metrics) -> None:
    """Add the routes, and count answers from the service's run records."""
    api.include_router(ops_router(service, metrics))
    metrics.routes = api.routes
    service.answer_hooks.append(metrics.observe_answer)


def _match(routes: list[BaseRoute], scope: Scope) -> str | None:
    """The template of the route Starlette would pick: the first full match, else the first path match
    (a wrong method); inside a mount, the mount's prefix and the inner route's template."""
    partial: str | None = None
    for candidate in routes:
        matched, child = candidate.matches(scope)
        if matched == Match.NONE:
            continue
        if isinstance(candidate, Mount):
            inner = _match(candidate.routes, {**scope, **child})
            template = candidate.path + inner if inner else None
        elif (router := getattr(candidate, "original_router", None)) is not None:  # FastAPI's include_router
            template = _match_included(candidate, router, scope)
        else:
            template = getattr(candidate, "path", None)
        if template is None:
            continue
        if matched == Match.FULL:
            return template
        partial = partial or template
    return partial


def _match_included(included: BaseRoute, router: Any, scope: Scope) -> str | None:
    prefix = getattr(getattr(included, "include_context", None), "prefix", "")  # the routes hold their own
    path = scope.get("path", "")
    if not path.startswith(prefix):
        return None
    inner = _match(router.routes, {**scope, "path": path[len(prefix):] or "/"})
    return prefix + inner if inner else None


def _is_loopback(address: str) -> bool:
    ip = ip_of(address)
    return ip is not None and ip.is_loopback
