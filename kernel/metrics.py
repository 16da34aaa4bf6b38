"""Who may read /metrics, and the gunicorn hooks of prometheus_client's multiprocess mode.

django-prometheus does the measuring (request latency by view, responses by status, database and
cache backends, cache hits and misses) and kernel.health serves its exporter. Metrics reveal
traffic, views and error rates, so they are not public: loopback, the addresses and networks in
METRICS_ALLOWED_IPS, or a bearer METRICS_TOKEN.

The two gunicorn server hooks, `on_starting` and `child_exit`, are what multiprocess mode needs
under gunicorn; its config file imports them (docs/operations.md). This module also works as a
config of its own, `gunicorn -c python:kernel.metrics`, since gunicorn reads only the names it
knows.

Celery workers: every task is counted and timed (`task_started`, `task_finished`), and with
WORKER_METRICS_PORT set a worker serves the values of its pool's processes on that port, under
the same rule as /metrics (`serve_worker_metrics`). config/celery.py connects them to Celery's
signals.

Requests (`RequestMetricsMiddleware`, one pass at the edge): django-prometheus's series by view,
method and status, and by tenant plan: the plan is what capacity and limits are sold by, so the
API's requests are also counted and timed by the plan of the tenant whose credential made them.
Plans are operators' data, few and slow to change; a process still labels at most
MAX_PLAN_LABELS of them, the rest as `other`.

`/metrics` is the process's registry (or every process's, in multiprocess mode) joined with
collectors read at scrape time (`scrape_registry`): facts about shared services, such as the
broker's queues, that one process measures as well as any other and that no file should sum.
"""

import hmac
import ipaddress
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    make_wsgi_app,
    multiprocess,
)
from prometheus_client.registry import Collector

from kernel.problems import ProblemType

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _client_address(remote_addr: str) -> IPAddress | None:
    # REMOTE_ADDR is the peer of the socket; trusting proxy headers is a separate, later decision.
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; judge them as the IPv4 address.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _has_metrics_token(authorization: str) -> bool:
    expected = settings.METRICS_TOKEN
    scheme, _, given = authorization.partition(" ")
    if not expected or scheme.lower() != "bearer":
        return False
    # Constant time, so that response timing does not reveal how much of a guess was right.
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def client_may_read_metrics(request: HttpRequest) -> bool:
    return may_read_metrics(
        request.META.get("REMOTE_ADDR", ""), request.headers.get("Authorization", "")
    )


def may_read_metrics(remote_addr: str, authorization: str) -> bool:
    """A loopback peer, one in METRICS_ALLOWED_IPS, or the bearer METRICS_TOKEN."""
    address = _client_address(remote_addr)
    if address is not None:
        if address.is_loopback:
            return True
        for entry in settings.METRICS_ALLOWED_IPS:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
    return _has_metrics_token(authorization)


# --- gunicorn server hooks (multiprocess mode) ---------------------------------------------------
# Under gunicorn each worker is a process with its own counters, and a scrape reaches only one of
# them. With PROMETHEUS_MULTIPROC_DIR set, prometheus_client writes every worker's values to files
# in that directory and the exporter sums them.


def _multiprocess_dir() -> Path | None:
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def on_starting(server: object) -> None:
    """Drop the previous run's values, so that counters restart with the server."""
    directory = _multiprocess_dir()
    if directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    # Only prometheus_client's own files, in case the directory was pointed somewhere shared.
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)


def child_exit(server: object, worker: object) -> None:
    """Let the live gauges of a worker that exited stop counting."""
    worker_process_exited(worker.pid)  # type: ignore[attr-defined]


# --- Celery workers ------------------------------------------------------------------------------
# Tasks run in the pool's processes, and the worker's main process serves the sum of their values
# (multiprocess mode, as under gunicorn): the pool's processes come and go, the port stays.

TASKS = Counter(
    "celery_tasks_total",
    "Celery tasks run, by task and outcome (success, failure, retry, ...).",
    ["task", "outcome"],
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)
TASK_SECONDS = Histogram(
    "celery_task_duration_seconds",
    "How long Celery tasks ran, by task.",
    ["task"],
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)
_STARTED_ATTRIBUTE = "_tenantapi_started"


def task_started(task: Any) -> None:
    setattr(task.request, _STARTED_ATTRIBUTE, time.perf_counter())


def task_finished(task: Any, state: str | None) -> None:
    # Timed first: a scrape that counts the task finds its duration too.
    started = getattr(task.request, _STARTED_ATTRIBUTE, None)
    if started is not None:
        TASK_SECONDS.labels(task=task.name).observe(time.perf_counter() - started)
    TASKS.labels(task=task.name, outcome=(state or "unknown").lower()).inc()


class _MetricsServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per scrape."""


def guarded_exporter(registry: CollectorRegistry) -> Callable[[dict, Any], Iterable[bytes]]:
    """A WSGI app exporting `registry` to the clients /metrics admits; a 403 problem to others."""
    exporter = make_wsgi_app(registry)
    problem = ProblemType.PERMISSION_DENIED
    refusal = json.dumps(
        {
            "type": problem.uri,
            "title": problem.title,
            "status": problem.status,
            "detail": "Metrics are readable from allowed addresses or with the metrics token.",
        }
    ).encode()

    def guarded(environ: dict, start_response: Any) -> Iterable[bytes]:
        if may_read_metrics(environ.get("REMOTE_ADDR", ""), environ.get("HTTP_AUTHORIZATION", "")):
            return exporter(environ, start_response)
        start_response("403 Forbidden", [("Content-Type", "application/problem+json")])
        return [refusal]

    return guarded


def serve_worker_metrics() -> WSGIServer | None:
    """Serve the worker's metrics on WORKER_METRICS_PORT, if set, from a thread of the worker's
    main process; called once as the worker starts, before its pool does.

    The pool's processes write their values to PROMETHEUS_MULTIPROC_DIR, which must then be a
    directory of the worker's own: its previous run's files are deleted here, so that counters
    restart with the worker.
    """
    directory = _multiprocess_dir()
    if not settings.WORKER_METRICS_PORT or directory is None:  # the settings require both
        return None
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    server = make_server(
        settings.WORKER_METRICS_ADDRESS,
        settings.WORKER_METRICS_PORT,
        guarded_exporter(registry),
        server_class=_MetricsServer,
        handler_class=_QuietHandler,
    )
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    return server


def worker_process_exited(pid: int) -> None:
    """Let the live gauges of a process that exited (a gunicorn worker, a Celery pool process)
    stop counting."""
    if _multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)


# --- Requests by tenant plan ---------------------------------------------------------------------

# The requests measured: the REST API's and GraphQL's, which tenants' credentials make; probes,
# scrapes and the admin would only dilute the anonymous line.
PLAN_MEASURED_PREFIXES = ("/api/", "/graphql/")
# Requests without a tenant's credential (sign-in, signup, refused credentials).
NO_PLAN = "anonymous"
OTHER_PLAN = "other"
MAX_PLAN_LABELS = 20

PLAN_REQUESTS = Counter(
    "tenant_requests_total",
    "API requests by the plan of the tenant whose credential made them, and response status.",
    ["plan", "status"],
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)
PLAN_REQUEST_SECONDS = Histogram(
    "tenant_request_duration_seconds",
    "How long API requests took, by the plan of the tenant whose credential made them.",
    ["plan"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)
_plans_seen: set[str] = set()


def plan_label(request: HttpRequest) -> str:
    """The plan code of the request's tenant credential (DRF and GraphQL leave the principal on
    Django's request as `auth`), bounded to MAX_PLAN_LABELS codes per process."""
    tenant = getattr(getattr(request, "auth", None), "tenant", None)
    if tenant is None:
        return NO_PLAN
    # Only a plan already loaded (the rate limit reads it, a cached principal carries it): a
    # query here would cost every request a round trip for a label.
    if not type(tenant).plan.is_cached(tenant):
        return OTHER_PLAN
    code = tenant.plan.code
    if code not in _plans_seen:
        if len(_plans_seen) >= MAX_PLAN_LABELS:
            return OTHER_PLAN
        _plans_seen.add(code)
    return code


class RequestMetricsMiddleware:
    """Every request counted and timed once, outermost: django-prometheus's request metrics that
    the dashboards and alerts read, and the API's by tenant plan.

    django-prometheus's own pair of middleware (one outermost, one innermost) walks every request
    twice and updates fourteen series, most of which nothing reads (body sizes, charsets, totals
    by method and by transport, totals the by-view series already sum to). This one records, on
    django-prometheus's metric objects (the names stay), what docs/operations.md and deploy/
    use: requests by view, transport and method; responses by status, view and method; latency
    by view and method, from the edge (the whole stack, as a client sees it); exceptions by type
    and view. Then the plan's series for the API's requests. It sees the status that leaves:
    a 429, a problem made of an exception.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        # Imported here, not with this module: gunicorn's master imports this module as its
        # config before Django's settings are read, and django-prometheus takes its metrics'
        # namespace from the settings when it is first imported.
        from django_prometheus.middleware import Metrics

        self.get_response = get_response
        self.metrics = Metrics.get_instance()
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        started = time.perf_counter()
        response = self.get_response(request)
        self._observe(request, response, started)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        response = await self.get_response(request)
        self._observe(request, response, started)
        return response

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs) -> None:
        self.metrics.requests_by_view_transport_method.labels(
            view=_view_name(request),
            transport="https" if request.is_secure() else "http",
            method=_method(request),
        ).inc()

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        self.metrics.exceptions_by_type.labels(type=type(exception).__name__).inc()
        self.metrics.exceptions_by_view.labels(view=_view_name(request)).inc()

    def _observe(self, request: HttpRequest, response: HttpResponseBase, started: float) -> None:
        elapsed = time.perf_counter() - started
        view, method = _view_name(request), _method(request)
        status = str(response.status_code)
        self.metrics.responses_by_status_view_method.labels(
            status=status, view=view, method=method
        ).inc()
        self.metrics.requests_latency_by_view_method.labels(view=view, method=method).observe(
            elapsed
        )
        if request.path_info.startswith(PLAN_MEASURED_PREFIXES):
            plan = plan_label(request)
            PLAN_REQUEST_SECONDS.labels(plan=plan).observe(elapsed)
            PLAN_REQUESTS.labels(plan=plan, status=status).inc()


_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "OPTIONS", "CONNECT", "PATCH"}
)


def _method(request: HttpRequest) -> str:
    # A label per method a client makes up would be a series each (django-prometheus' rule).
    return request.method if request.method in _METHODS else "<invalid method>"


def _view_name(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    return (match.view_name if match is not None else None) or "<unnamed view>"


# --- What /metrics serves ------------------------------------------------------------------------


class _Joined(Collector):
    def __init__(self, *sources: Collector) -> None:
        self.sources = sources

    def collect(self) -> Iterable[Any]:
        for source in self.sources:
            yield from source.collect()


def scrape_registry(*collectors: Collector) -> CollectorRegistry:
    """The metrics of this process (of every process, in multiprocess mode) and `collectors`,
    which are read when the registry is."""
    if _multiprocess_dir() is not None:
        base = CollectorRegistry()
        multiprocess.MultiProcessCollector(base)
    else:
        base = REGISTRY
    # Names unknown until collected: "without names", so that `?name[]=` filters still see it.
    registry = CollectorRegistry(support_collectors_without_names=True)
    # The scrape-time collectors first: what they touch (the cache, the database) is then
    # counted in the same scrape.
    registry.register(_Joined(*collectors, base))
    return registry
