"""Operational endpoints outside the API version: /healthz, /readyz and /metrics, and `/`, which
says where everything is.

Plain Django views with no authentication, so that probes and Prometheus need no credentials and
none of DRF's machinery runs. None of them is cacheable: a cached "ok" would hide an outage.

/readyz runs every check at once, each bounded by READINESS_CHECK_TIMEOUT, so that the probe
answers within about that time even when a dependency hangs. It is an async view, so that under
ASGI a slow check holds no thread while it waits; the blocking clients (database, cache, broker)
run in threads of their own that the probe can stop waiting for.

/readyz is public and unauthenticated, so it tells the public statuses only: why a check failed
(an exception's text may name hosts and addresses) and how long each took are for the callers
that may read the metrics (loopback, METRICS_ALLOWED_IPS, the metrics token). And a process runs
the checks at most once per READINESS_CACHE_SECONDS, whoever asks how often: past the probes that
arrive while the first round is still running (at most a few per check, `_MAX_CHECKS_IN_FLIGHT`),
a flood of probes costs no more database connections than one.
"""

import asyncio
import concurrent.futures
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

# The checks first run in threads of their own, all at once, and each client library would be
# imported lazily there; concurrent first imports of redis-py trip Python's import deadlock
# detection. Importing it here, once, avoids that.
import redis.asyncio  # noqa: F401
from asgiref.sync import async_to_sync
from celery import current_app as celery_app
from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers
from django.conf import settings
from django.core.cache import caches
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import exposition
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kernel import replicas
from kernel.metrics import client_may_read_metrics, scrape_registry
from kernel.problems import ProblemType, problem_response
from kernel.queues import QueueCollector

# --- Liveness -------------------------------------------------------------------------------------


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    # Touches no dependency: a database outage must not make the orchestrator restart every pod.
    return JsonResponse({"status": "ok"})


# --- Readiness ------------------------------------------------------------------------------------


class CheckFailed(Exception):
    """A dependency answered, but not as it should (a round trip lost its value)."""


@dataclass(frozen=True)
class CheckResult:
    status: str  # "ok" or "down"
    duration_ms: float
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status, "duration_ms": self.duration_ms}
        if self.detail:
            body["reason" if self.status == "down" else "detail"] = self.detail
        return body


def _check_database() -> None:
    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        # The check runs in a thread of its own: give its connection back rather than leave it
        # open until the thread is collected.
        connection.close()


def _check_cache() -> None:
    cache = caches["default"]
    key = f"readyz:{uuid.uuid4().hex}"
    value = uuid.uuid4().hex
    cache.set(key, value, timeout=30)
    try:
        # django-redis may be told to swallow connection errors; a lost value still shows.
        if cache.get(key) != value:
            raise CheckFailed("the value written was not read back")
    finally:
        cache.delete(key)


def _check_broker() -> str:
    if celery_app.conf.task_always_eager and celery_app.conf.broker_url.startswith("memory://"):
        # The embedded default has no broker: tasks run inline in the caller's process.
        return "inline"
    timeout = settings.READINESS_CHECK_TIMEOUT
    options = {}
    if celery_app.conf.broker_url.startswith(("redis://", "rediss://")):
        # Bound the PING too, so that a broker that accepts but never answers frees the thread.
        options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    with celery_app.connection_for_write(
        connect_timeout=timeout, transport_options=options
    ) as connection:
        # One attempt: readiness reports the state now; probes supply the retries.
        connection.ensure_connection(max_retries=0, timeout=timeout)
    return ""


async def _check_channel_layer() -> None:
    # A layer of our own for the round trip: the shared one allows receive() from a single event
    # loop, and consumers are receiving on it.
    layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
    try:
        channel = await layer.new_channel("readyz")
        nonce = uuid.uuid4().hex
        await layer.send(channel, {"type": "readyz.ping", "nonce": nonce})
        message = await layer.receive(channel)
        if message.get("nonce") != nonce:
            raise CheckFailed("a different message came back")
    finally:
        close_pools = getattr(layer, "close_pools", None)
        if close_pools is not None:
            await close_pools()


# A dependency that hangs past its socket timeouts keeps its check's thread busy; this caps how
# many such threads pile up per check while probes keep arriving.
_MAX_CHECKS_IN_FLIGHT = 4


class _ThreadedCheck:
    """Runs a blocking check in a daemon thread that the probe can stop waiting for."""

    def __init__(self, check: Callable[[], Any]) -> None:
        self.check = check
        self.in_flight = threading.BoundedSemaphore(_MAX_CHECKS_IN_FLIGHT)

    async def __call__(self) -> Any:
        if not self.in_flight.acquire(blocking=False):
            raise CheckFailed("earlier checks are still waiting for an answer")
        future: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(self.check())
                    except BaseException as exc:
                        future.set_exception(exc)
            finally:
                self.in_flight.release()

        threading.Thread(target=run, name=f"readyz-{self.check.__name__}", daemon=True).start()
        return await asyncio.wrap_future(future)


CHECKS: dict[str, Callable[[], Awaitable[Any]]] = {
    "database": _ThreadedCheck(_check_database),
    "cache": _ThreadedCheck(_check_cache),
    "broker": _ThreadedCheck(_check_broker),
    "channel_layer": _check_channel_layer,
}
# Reported, never failing readiness: without its replicas the primary serves alone
# (kernel/replicas.py).
OPTIONAL_CHECKS: set[str] = set()
if replicas.replica_aliases():
    CHECKS["replicas"] = _ThreadedCheck(replicas.report)
    OPTIONAL_CHECKS.add("replicas")

# Connection URLs may carry passwords: a reason keeps the error's message but drops any URL in it.
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_MAX_REASON_LENGTH = 160


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {settings.READINESS_CHECK_TIMEOUT:g} s"
    message = _URL.sub("<url>", " ".join(str(exc).split()))
    reason = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return reason[:_MAX_REASON_LENGTH]


async def _run_check(check: Callable[[], Awaitable[Any]]) -> CheckResult:
    started = time.perf_counter()
    try:
        outcome = await asyncio.wait_for(check(), timeout=settings.READINESS_CHECK_TIMEOUT)
    except Exception as exc:
        status, detail = "down", _reason(exc)
    else:
        status, detail = "ok", outcome if isinstance(outcome, str) else ""
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    return CheckResult(status=status, duration_ms=duration_ms, detail=detail)


# The last results of this process, and when they were taken (time.monotonic()).
_last_results: tuple[float, dict[str, CheckResult]] | None = None


async def _results() -> dict[str, CheckResult]:
    """Each check's result, by name: run now, or kept from a round under READINESS_CACHE_SECONDS
    old."""
    global _last_results
    last = _last_results
    if last is not None and time.monotonic() - last[0] < settings.READINESS_CACHE_SECONDS:
        return last[1]
    outcomes = await asyncio.gather(*(_run_check(check) for check in CHECKS.values()))
    results = dict(zip(CHECKS, outcomes, strict=True))
    _last_results = (time.monotonic(), results)
    return results


@never_cache
@require_safe
async def readyz(request: HttpRequest) -> JsonResponse:
    results = await _results()
    if client_may_read_metrics(request):
        checks = {name: result.as_json() for name, result in results.items()}
    else:
        checks = {name: {"status": result.status} for name, result in results.items()}
    down = [
        name
        for name, result in results.items()
        if result.status != "ok" and name not in OPTIONAL_CHECKS
    ]
    if not down:
        return JsonResponse({"status": "ok", "checks": checks})
    return problem_response(
        request,
        ProblemType.SERVICE_UNAVAILABLE,
        detail=f"Not ready: {', '.join(down)} down.",
        extra={"checks": checks},
    )


# --- The root -----------------------------------------------------------------------------------


@never_cache
@require_safe
def index(request: HttpRequest) -> JsonResponse:
    """`/`: where things are, for whoever opens the server's address first."""
    return JsonResponse(
        {
            "name": "Tenant API",
            "api": "/api/v1/",
            "docs": "/api/v1/docs/",
            "schema": "/api/v1/schema/",
            "health": "/healthz",
            "readiness": "/readyz",
            "admin": "/admin/",
            "websocket": "/ws/v1/notifications/",
        }
    )


# --- Metrics --------------------------------------------------------------------------------------


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    if not client_may_read_metrics(request):
        return problem_response(
            request,
            ProblemType.PERMISSION_DENIED,
            detail="Metrics are readable from allowed addresses or with the metrics token.",
        )
    # With PROMETHEUS_MULTIPROC_DIR set, the registry sums every worker's values itself.
    registry = scrape_registry(DependencyCollector(), QueueCollector())
    if names := request.GET.getlist("name[]"):
        registry = registry.restricted_registry(names)
    encoder, content_type = exposition.choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(registry), content_type=content_type)


class DependencyCollector(Collector):
    """`tenantapi_dependency_up{dependency}`: 1 when /readyz's check of the dependency (database,
    cache, broker, channel_layer) passes, else 0, so that "PostgreSQL is down" is an alert and not
    only a probe's verdict. Read at scrape time from the same round of checks probes get (run at
    most once per READINESS_CACHE_SECONDS, each bounded by READINESS_CHECK_TIMEOUT)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            f"{settings.PROMETHEUS_METRIC_NAMESPACE}_dependency_up",
            "Whether this process's readiness check of a dependency passes (1) or not (0).",
            labels=["dependency"],
        )
        # The view is synchronous (under ASGI it runs in a thread of its own), the checks not.
        for name, result in async_to_sync(_results)().items():
            up.add_metric([name], 1.0 if result.status == "ok" else 0.0)
        yield up
