"""Request tracing: the request id, who is acting, the access log, and context carried into tasks.

The request id lives in a context variable, so that problem bodies, log lines and Celery task
headers can all read it without passing the request around. `RequestIdMiddleware` sets it for each
request and binds it into structlog's context variables, from which every log line of the request,
ours and every library's, takes it.

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

from kernel.context import current_tenant_id

REQUEST_ID_HEADER = "X-Request-ID"
# What we accept from a client: short, and safe to put in a log line or a header as it is.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

access_logger = structlog.get_logger("tenantapi.access")


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
        request_id, started = _start_request(request)
        response = None
        try:
            response = self.get_response(request)
            return response
        finally:
            _finish_request(request, response, request_id, started)

    async def __acall__(self, request):
        request_id, started = _start_request(request)
        response = None
        try:
            response = await self.get_response(request)
            return response
        finally:
            _finish_request(request, response, request_id, started)


def _start_request(request) -> tuple[str, float]:
    request_id = accept_request_id(request.headers.get(REQUEST_ID_HEADER))
    # A WSGI thread serves request after request: start from nothing, whatever came before.
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    request_id_var.set(request_id)
    return request_id, time.perf_counter()


def _finish_request(request, response, request_id: str, started: float) -> None:
    try:
        if response is not None:
            response[REQUEST_ID_HEADER] = request_id
        # The path without its query string: query strings can hold tokens.
        access_logger.info(
            "request",
            method=request.method,
            path=request.path,
            # No response means an exception escaped every handler: the server answers 500.
            status=response.status_code if response is not None else 500,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
    finally:
        structlog.contextvars.clear_contextvars()
        request_id_var.set(None)


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
