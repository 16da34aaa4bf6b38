"""Request tracing: the request id, the W3C trace context, who is acting, the access log, and
context carried into tasks.

The request id lives in a context variable, so that problem bodies, log lines and Celery task
headers can all read it without passing the request around. `RequestIdMiddleware` sets it for each
request and binds it into structlog's context variables, from which every log line of the request,
ours and every library's, takes it.

Trace context (W3C Trace Context, docs/operations.md "Tracing")
--------------------------------------------------------------
Every request belongs to a trace, whether or not spans are exported. With OpenTelemetry set up
(kernel/telemetry.py: an OTLP endpoint is configured), the server's edge middleware (WSGI or ASGI
instrumentation) has started the server span before Django runs, from the request's `traceparent`
when it is valid. Without it, `RequestIdMiddleware` does the same with a span that records nothing:
it continues a valid `traceparent` or starts a trace, at the cost of a few random bits. Either way
the request's trace id and span id are in every log line (`add_trace_ids`), in the `traceresponse`
header of its answer (Trace Context level 2), in the outbox row of the events it publishes, and in
the tasks it sends, so that a line of the worker, a webhook delivery and a notification pushed to a
socket are found from the request's trace id.

Carrying context into background tasks
--------------------------------------
What a task must know about its caller travels in the task message. Each piece of context has a
*propagator*: `capture()` runs where the task is sent and returns a small JSON-serialisable dict
(empty when there is nothing to carry); `restore(captured)` runs in the worker around the task and
is a context manager that puts the values back and undoes that when the task ends. config/celery.py
calls them for every task, in eager mode too. To add one, e.g. the tenant:

    @contextmanager
    def restore_tenant(captured: Mapping[str, Any]) -> Iterator[None]:
        tenant_id = captured.get("tenant_id")
        with tenant_context(tenant_id) if tenant_id else no_tenant():
            yield

    register_propagator(
        ContextPropagator(
            name="tenant",
            capture=lambda: {"tenant_id": str(t)} if (t := current_tenant_id()) else {},
            restore=restore_tenant,
        )
    )

Register at import time of a module that both the web processes and the workers import (an app's
`AppConfig.ready()` is the usual place). `restore` receives what this propagator's own `capture`
returned, or `{}` when the message carries nothing for it; an exception from it fails the task
before the task body runs. Everything bound into structlog's context while a task runs is dropped
when it ends, so `restore` may simply bind its fields for the log lines.
"""

import functools
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import structlog
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from kernel.context import current_tenant_id

REQUEST_ID_HEADER = "X-Request-ID"
# What we accept from a client: short, and safe to put in a log line or a header as it is.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

access_logger = structlog.get_logger("tenantapi.access")

TRACE_RESPONSE_HEADER = "traceresponse"
# Trace Context level 2's flag: the trace id's last 7 bytes are random (the sampled flag is 0x01).
_RANDOM_TRACE_ID = 0x02
TENANT_ATTRIBUTE = "tenant.id"
PERMISSION_ATTRIBUTE = "tenantapi.permission"
# Set by kernel.telemetry once the SDK and its instrumentations run in this process: the Celery
# instrumentation carries the trace into tasks, and spans record.
_instrumented = False


def mark_instrumented() -> None:
    global _instrumented
    _instrumented = True


def is_instrumented() -> bool:
    return _instrumented


def get_request_id() -> str | None:
    return request_id_var.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


def accept_request_id(candidate: str | None) -> str:
    """The client's X-Request-ID when it is well-formed, else a fresh one."""
    if candidate and _VALID_REQUEST_ID.fullmatch(candidate):
        return candidate
    return new_request_id()


def bind_actor(
    *,
    tenant_id: uuid.UUID | str | None = None,
    user_id: uuid.UUID | int | str | None = None,
    api_key_id: uuid.UUID | str | None = None,
    app_id: uuid.UUID | str | None = None,
) -> None:
    """Record who is acting: every later log line of this request or task carries these ids.

    Authentication calls it once the credential is known. Ids are written as strings, so that
    a UUID reads the same in every line.
    """
    ids = {
        "tenant_id": tenant_id,
        "user_id": user_id,
        "api_key_id": api_key_id,
        "app_id": app_id,
    }
    structlog.contextvars.bind_contextvars(
        **{name: str(value) for name, value in ids.items() if value is not None}
    )
    if tenant_id is not None:
        # The server span (or the task's) started before the tenant was known; the spans that
        # start from now on get it from kernel.telemetry's span processor.
        set_span_attribute(TENANT_ATTRIBUTE, str(tenant_id))


def set_span_attribute(key: str, value: str | bool | int) -> None:
    """Set an attribute on the current span, when it records (sampled, with tracing set up)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(key, value)


def add_trace_ids(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the current trace and span ids, sampled or not, on every line."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict.setdefault("trace_id", trace.format_trace_id(span_context.trace_id))
        event_dict.setdefault("span_id", trace.format_span_id(span_context.span_id))
    return event_dict


def trace_response(span_context: trace.SpanContext | None = None) -> str | None:
    """The `traceresponse` value (Trace Context level 2) of the current span, if there is one."""
    span_context = span_context or trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return (
        f"00-{trace.format_trace_id(span_context.trace_id)}"
        f"-{trace.format_span_id(span_context.span_id)}-{span_context.trace_flags:02x}"
    )


def _untraced_span(parent: trace.SpanContext) -> trace.NonRecordingSpan:
    """A span that records nothing, as a child of `parent` (or the root of a new trace): what
    gives a request or a task its ids when no SDK runs. Not sampled: nothing of it was kept."""
    if parent.is_valid:
        trace_id, flags = parent.trace_id, parent.trace_flags & _RANDOM_TRACE_ID
    else:
        trace_id, flags = random.getrandbits(128), _RANDOM_TRACE_ID
    return trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id=trace_id,
            span_id=random.getrandbits(64),
            is_remote=False,
            trace_flags=trace.TraceFlags(flags),
            trace_state=parent.trace_state if parent.is_valid else None,
        )
    )


def enter_trace(carrier: Mapping[str, Any] | None) -> object | None:
    """Make sure a trace is current, continuing the one `carrier` names (W3C headers).

    Returns a token for `leave_trace`, or None when a span is current already (the server's or
    the task's instrumentation started it). An invalid `traceparent` is ignored: a new trace.
    """
    if trace.get_current_span().get_span_context().is_valid:
        return None
    parent = trace.get_current_span(propagate.extract(carrier or {})).get_span_context()
    return otel_context.attach(trace.set_span_in_context(_untraced_span(parent)))


def leave_trace(token: object | None) -> None:
    if token is not None:
        otel_context.detach(token)


@contextmanager
def span(name: str, *, kind: trace.SpanKind = trace.SpanKind.INTERNAL, **attributes: Any):
    """A span of our own around a piece of work, when tracing is set up (else nothing)."""
    if not _instrumented:
        yield None
        return
    with _tracer().start_as_current_span(name, kind=kind, attributes=attributes) as current:
        yield current


@contextmanager
def resumed_trace(
    carrier: Mapping[str, Any] | None,
    name: str,
    *,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    **attributes: Any,
) -> Iterator[None]:
    """Carry on, here, the trace that `carrier` (W3C fields kept with a message or a row) names.

    For work done on behalf of an earlier request, somewhere else or later: the span is a child
    of the request's span, so that it shows in the request's trace however late it runs, and it
    links to the span current here (the relay's run, the socket's connection), which caused it
    to run now but is not what it belongs to. Without a valid carrier it is a child of the
    current span. Without tracing set up, the request's trace id still reaches the log lines.
    """
    here = trace.get_current_span().get_span_context()
    parent_context = propagate.extract(carrier or {})
    parent = trace.get_current_span(parent_context).get_span_context()
    if not _instrumented:
        token = otel_context.attach(
            trace.set_span_in_context(_untraced_span(parent if parent.is_valid else here))
        )
        try:
            yield
        finally:
            otel_context.detach(token)
        return
    if not parent.is_valid:
        parent_context = None
    links = [trace.Link(here)] if here.is_valid and parent.is_valid else []
    with _tracer().start_as_current_span(
        name, context=parent_context, kind=kind, links=links, attributes=attributes
    ):
        yield


def _tracer() -> trace.Tracer:
    return trace.get_tracer("tenantapi")


def trace_carrier() -> dict[str, str]:
    """The current trace context as W3C fields (`traceparent`, `tracestate`), for a message or a
    stored row; empty when there is none."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def add_tenant_id(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the tenant in scope, on lines that have no tenant_id bound."""
    if "tenant_id" not in event_dict:
        tenant_id = current_tenant_id()
        if tenant_id is not None:
            event_dict["tenant_id"] = str(tenant_id)
    return event_dict


class RequestIdMiddleware:
    """Gives every request an id, returns it as X-Request-ID and writes one access log line.

    It sits near the top of MIDDLEWARE: everything below it (problem details, authentication,
    views) runs with the id bound, and every response they produce, errors included, passes back
    through it. It works natively in both modes, so ASGI requests make no thread hop for it.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        request_id, started, trace_token = _start_request(request)
        response = None
        try:
            response = self.get_response(request)
            return response
        finally:
            _finish_request(request, response, request_id, started, trace_token)

    async def __acall__(self, request):
        request_id, started, trace_token = _start_request(request)
        response = None
        try:
            response = await self.get_response(request)
            return response
        finally:
            _finish_request(request, response, request_id, started, trace_token)


def _start_request(request) -> tuple[str, float, object | None]:
    request_id = accept_request_id(request.headers.get(REQUEST_ID_HEADER))
    # A WSGI thread serves request after request: start from nothing, whatever came before.
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    request_id_var.set(request_id)
    trace_token = enter_trace(request.headers)
    return request_id, time.perf_counter(), trace_token


def _finish_request(
    request, response, request_id: str, started: float, trace_token: object | None
) -> None:
    try:
        status = response.status_code if response is not None else 500
        route = _route_of(request)
        if response is not None:
            response[REQUEST_ID_HEADER] = request_id
            if value := trace_response():
                response[TRACE_RESPONSE_HEADER] = value
        _name_server_span(request, route)
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        # The path without its query string: query strings can hold tokens.
        access_logger.info(
            "request",
            method=request.method,
            path=request.path,
            # No response means an exception escaped every handler: the server answers 500.
            status=status,
            duration_ms=duration_ms,
        )
        if duration_ms >= settings.SLOW_REQUEST_MS:
            # Its own line, at warning level, with the route: what an operator searches for,
            # and from its trace_id to the trace (sampled or not, the id is there).
            access_logger.warning(
                "slow_request",
                method=request.method,
                route=route,
                status=status,
                duration_ms=duration_ms,
            )
    finally:
        structlog.contextvars.clear_contextvars()
        request_id_var.set(None)
        leave_trace(trace_token)


# A named group of a regex pattern: a router's `(?P<pk>[^/.]+)` is written `<pk>`, as a path
# converter is, and a group that matches one literal (`(?P<version>v1)`) is that literal.
_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>([^()]*)\)")
_LITERAL = re.compile(r"[\w-]+")


def _template_part(match: re.Match[str]) -> str:
    name, pattern = match.groups()
    return pattern if _LITERAL.fullmatch(pattern) else f"<{name}>"


def _route_of(request) -> str | None:
    """The URL pattern that answered, as a template (`/api/v1/products/<uuid:pk>/`),
    never the raw path: Django joins the patterns of every level, regexes and paths alike."""
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None)
    if not route:
        return None
    return _route_template(route)


@functools.lru_cache(maxsize=1024)  # a function of the route alone: the URLconf's few hundred
def _route_template(route: str) -> str:
    return "/" + _NAMED_GROUP.sub(_template_part, route).replace("^", "").replace("$", "")


def _name_server_span(request, route: str | None) -> None:
    """Name the server span after its route (http.route); the edge middleware only knew the
    path, which would make every product its own operation."""
    span = trace.get_current_span()
    if route and span.is_recording():
        span.set_attribute("http.route", route)
        span.update_name(f"{request.method} {route}")


# --- Context propagation into tasks -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContextPropagator:
    """How one piece of context crosses into a background task (see the module docstring)."""

    name: str
    capture: Callable[[], dict[str, Any]]
    restore: Callable[[Mapping[str, Any]], AbstractContextManager[Any]]


_propagators: dict[str, ContextPropagator] = {}


def register_propagator(propagator: ContextPropagator) -> None:
    """Add a propagator; registering the same name again replaces it (module reloads)."""
    _propagators[propagator.name] = propagator


def capture_context() -> dict[str, dict[str, Any]]:
    """What every propagator captures here and now, by propagator name, for a task message."""
    captured = {}
    for propagator in _propagators.values():
        values = propagator.capture()
        if values:
            captured[propagator.name] = values
    return captured


@contextmanager
def restored_context(captured: Mapping[str, Any], **fields: Any) -> Iterator[None]:
    """Run a task in the context its caller captured, and nothing else.

    The log context starts empty, then gets `fields` (the task id, say) and whatever the
    propagators restore; at the end it is put back exactly as it was. In a worker that means
    empty again for the next task on the thread; in eager mode, the caller's context.
    """
    saved = structlog.contextvars.get_contextvars()
    with ExitStack() as stack:

        @stack.callback
        def _put_back_log_context() -> None:
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(**saved)

        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**fields)
        for propagator in _propagators.values():
            stack.enter_context(propagator.restore(captured.get(propagator.name) or {}))
        yield


def _capture_request_id() -> dict[str, str]:
    request_id = request_id_var.get()
    return {"request_id": request_id} if request_id else {}


@contextmanager
def _restore_request_id(captured: Mapping[str, Any]) -> Iterator[None]:
    request_id = captured.get("request_id")
    # Set even when absent: work that did not start in a request has no request id.
    token = request_id_var.set(request_id)
    if request_id:
        structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        yield
    finally:
        request_id_var.reset(token)


register_propagator(
    ContextPropagator(name="request_id", capture=_capture_request_id, restore=_restore_request_id)
)


def _capture_trace() -> dict[str, str]:
    # Where the Celery instrumentation runs it carries the trace in the message's headers itself,
    # and starts the task's span before this registry restores anything.
    return {} if _instrumented else trace_carrier()


@contextmanager
def _restore_trace(captured: Mapping[str, Any]) -> Iterator[None]:
    # A task without a trace (beat's jobs) starts one, so that its lines have a trace id too.
    token = enter_trace(captured)
    try:
        yield
    finally:
        leave_trace(token)


register_propagator(ContextPropagator(name="trace", capture=_capture_trace, restore=_restore_trace))
