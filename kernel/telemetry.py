"""OpenTelemetry: spans exported over OTLP, set up once per process from the standard variables.

Nothing is set up unless an endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), and `OTEL_SDK_DISABLED=true` or
`OTEL_TRACES_EXPORTER=none` turn it off again. Unset, no SDK runs, no library is patched and
nothing is exported: requests still get trace ids from kernel/tracing.py, at the cost of a few
random bits. Set, `setup()` installs the SDK's tracer provider, with:

- a sampler: `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` as the SDK reads them, and when
  no sampler is named, parent-based trace-id-ratio sampling at `OTEL_TRACES_SAMPLER_ARG` (default
  0.1): a trace is kept or dropped whole, from the request that started it down to its tasks;
- the OTLP exporter over HTTP/protobuf, the one protocol supported (`OTEL_EXPORTER_OTLP_PROTOCOL`
  unset or `http/protobuf`), in a batch processor whose thread the SDK restarts after a fork;
- `tenant.id` on every span that starts while a tenant is in scope (the server span and a task's
  span get it from `bind_actor`, once the credential is known);
- a last pass over what leaves the process: query strings and user info dropped from URLs, and
  credential-looking text and emails masked, in any attribute (a WebSocket's `?token=`, a webhook
  endpoint's query string);
- the instrumentations of psycopg (statement text only: no parameters, no sqlcommenter), Redis
  (commands without their arguments), Celery (the trace crosses the broker in the message's
  headers) and httpx (webhook deliveries);
- the server's edge: the WSGI (gunicorn) or ASGI (uvicorn, HTTP and WebSockets) instrumentation
  wraps the application (`wsgi_application`, `asgi_application`), so that the server span covers
  everything the server answers, a 413 refused before Django included. Django's own
  instrumentation is not used: its middleware is synchronous (a thread hop per request under
  ASGI) and builds the absolute URL before our middleware runs, which turns a bad Host header into
  Django's HTML 400 instead of a problem. kernel/tracing.py names the server span after the route.

Where it is called: config/wsgi.py and config/asgi.py as they load (gunicorn loads the application
in each worker, after the fork), and config/celery.py as a worker process starts.
"""

import os
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

import structlog
from opentelemetry import trace

from kernel.context import current_tenant_id
from kernel.logging import REDACTED, mask_secrets
from kernel.tracing import TENANT_ATTRIBUTE, mark_instrumented

log = structlog.get_logger(__name__)

Role = Literal["wsgi", "asgi", "worker"]
DEFAULT_SAMPLING_RATIO = 0.1
SUPPORTED_PROTOCOL = "http/protobuf"
SERVICE_NAMES: dict[str, str] = {
    "wsgi": "tenantapi-api",
    "asgi": "tenantapi-asgi",
    "worker": "tenantapi-worker",
}

_set_up = False


def configured(environ: os._Environ | dict[str, str] = os.environ) -> bool:
    """Whether spans are to be exported: an OTLP endpoint is set and nothing turns it off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() in {"none", ""}:
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def setup(role: Role) -> bool:
    """Set tracing up in this process, once; returns whether spans are exported."""
    global _set_up
    if _set_up:
        return True
    if not configured():
        return False
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or SUPPORTED_PROTOCOL
    )
    if protocol != SUPPORTED_PROTOCOL:
        # Refusing to start the API over its tracing would be worse than running without it.
        log.error("tracing_not_started", reason=f"unsupported OTLP protocol {protocol!r}")
        return False

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if resource.attributes.get(SERVICE_NAME, "").startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: SERVICE_NAMES[role]}))
    provider = TracerProvider(resource=resource, sampler=_default_sampler())
    provider.add_span_processor(TenantSpanProcessor())
    provider.add_span_processor(BatchSpanProcessor(RedactingSpanExporter(OTLPSpanExporter())))
    trace.set_tracer_provider(provider)
    _instrument_libraries()
    mark_instrumented()
    _set_up = True
    log.info("tracing_started", role=role, service=resource.attributes.get(SERVICE_NAME))
    return True


def _default_sampler():
    """Parent-based ratio sampling, unless OTEL_TRACES_SAMPLER names another (None: the SDK's
    own reading of the variables)."""
    if os.environ.get("OTEL_TRACES_SAMPLER"):
        return None
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    try:
        ratio = float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", DEFAULT_SAMPLING_RATIO))
    except ValueError:
        ratio = DEFAULT_SAMPLING_RATIO
    return ParentBased(TraceIdRatioBased(min(max(ratio, 0.0), 1.0)))


def _instrument_libraries() -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    # Statement text only: parameters hold user data and, on the sign-in paths, credentials.
    PsycopgInstrumentor().instrument(enable_commenter=False, capture_parameters=False)
    RedisInstrumentor().instrument()
    CeleryInstrumentor().instrument()
    HTTPXClientInstrumentor().instrument()


def wsgi_application(application: Callable) -> Callable:
    """The WSGI application behind the server-span middleware, when tracing is set up."""
    if not _set_up:
        return application
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(application)


def asgi_application(application: Callable) -> Callable:
    """The ASGI application (HTTP and WebSockets) behind the server-span middleware, when
    tracing is set up. A socket's span lasts as long as the socket; its messages get no span of
    their own (a notification's push has one, in the trace of the change it announces)."""
    if not _set_up:
        return application
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(application, exclude_spans=["receive", "send"])


# --- What every span gets, and what leaves the process ------------------------------------------


class TenantSpanProcessor:
    """`tenant.id` on every span started while a tenant is in scope."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        tenant_id = current_tenant_id()
        if tenant_id is not None:
            span.set_attribute(TENANT_ATTRIBUTE, str(tenant_id))

    def _on_ending(self, span: Any) -> None:
        pass

    def on_end(self, span: Any) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# Attributes whose value is a URL or a request target: only the path is kept.
_URL_ATTRIBUTES = frozenset({"http.url", "url.full", "http.target", "url.path"})
_DROPPED_ATTRIBUTES = frozenset({"url.query"})
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")


def clean_attribute(key: str, value: Any) -> Any:
    """What of an attribute's value may leave the process (see the module docstring)."""
    if isinstance(value, str):
        if key in _URL_ATTRIBUTES:
            value = _USERINFO.sub("", value.split("?", 1)[0].split("#", 1)[0])
        return _EMAIL.sub(REDACTED, mask_secrets(value))
    if isinstance(value, tuple | list):
        return tuple(clean_attribute(key, item) for item in value)
    return value


def _cleaned(attributes: Any) -> dict[str, Any]:
    return {
        key: clean_attribute(key, value)
        for key, value in (attributes or {}).items()
        if key not in _DROPPED_ATTRIBUTES
    }


class RedactingSpanExporter:
    """Wraps the exporter: every span's attributes (and its events') cleaned on the way out.

    It runs in the batch processor's thread, not the request's."""

    def __init__(self, exporter: Any) -> None:
        self._exporter = exporter

    def export(self, spans: Sequence[Any]) -> Any:
        return self._exporter.export([self._redacted(span) for span in spans])

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)

    @staticmethod
    def _redacted(span: Any) -> Any:
        from opentelemetry.sdk.trace import Event, ReadableSpan

        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=_cleaned(span.attributes),
            events=[
                Event(event.name, _cleaned(event.attributes), event.timestamp)
                for event in span.events
            ],
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )
