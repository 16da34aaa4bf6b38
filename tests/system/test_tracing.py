"""Distributed tracing across real processes (docs/operations.md, "Tracing").

The servers (uvicorn for HTTP and WebSockets, gunicorn for the API) and a Celery worker run with
`OTEL_EXPORTER_OTLP_ENDPOINT` pointed at an OTLP/HTTP receiver in this process, which decodes what
they export. One change to a product must show as one trace: the request's server span, its SQL,
the task that fans the event out, the webhook's delivery and the push to a member's socket, each
carrying the tenant; and so must it when the broker refused the event at commit and the outbox
relay sends it later. The W3C headers go in and out as the contract says, and nothing secret
leaves in a span or a log line.
"""

import json
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
from django.test import override_settings
from websockets.sync.client import connect

from kernel.models import OutboxEvent
from kernel.tasks import event_dispatch_task, outbox_relay_task
from tests.catalog_helpers import PRODUCTS, product_url
from tests.factories import DEFAULT_PASSWORD, make_tenant
from tests.fixtures.celery_worker import CeleryWorker, worker_environment
from tests.fixtures.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.fixtures.servers import LiveServer, RedisServer
from tests.fixtures.webhook_receiver import WebhookReceiver
from tests.helpers import TOKEN, member_with_role, outcome, owner_of, sent_through_the_broker

pytestmark = pytest.mark.django_db(transaction=True)

CLIENT_TIMEOUT = 10.0
TRACE_RESPONSE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
FAN_OUT_TASK = "notifications.tasks.notifications_fan_out_task"
WEBHOOK_TASK = "notifications.webhooks.tasks.webhook_deliver_task"
RELAY_TASK = outbox_relay_task.name


def otel_environment(receiver: OtlpReceiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        # The default sampler (parent-based, by ratio) keeping every trace it starts.
        "OTEL_TRACES_SAMPLER_ARG": "1",
        # Export soon after a span ends, so that the test does not wait for the default 5 s.
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


@dataclass
class TracedStack:
    receiver: OtlpReceiver
    server: LiveServer
    worker: CeleryWorker


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture
def traced_stack(
    otlp_receiver: OtlpReceiver, live_asgi_server_factory: Callable[..., LiveServer]
) -> Iterator[TracedStack]:
    """uvicorn and a worker, both exporting, sending tasks (webhooks included) to the worker's
    own queue through the suite's broker."""
    queue = f"tests-tracing-{uuid.uuid4().hex[:12]}"
    environment = {
        **otel_environment(otlp_receiver),
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "WEBHOOKS_QUEUE": queue,
        "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
    }
    worker = CeleryWorker(queue=queue, env={**worker_environment(), **environment})
    worker.start()
    try:
        server = live_asgi_server_factory(**environment)
        with sent_through_the_broker():
            yield TracedStack(receiver=otlp_receiver, server=server, worker=worker)
    finally:
        worker.stop()


@contextmanager
def signed_in(server: LiveServer, user, tenant) -> Iterator[tuple[httpx.Client, str]]:
    with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as http:
        response = http.post(
            TOKEN, json={"email": user.email, "password": DEFAULT_PASSWORD, "tenant": tenant.slug}
        )
        assert response.status_code == 200, response.text
        token = response.json()["access"]
        http.headers["Authorization"] = f"Bearer {token}"
        yield http, token


def trace_response(response: httpx.Response) -> tuple[str, str, bool]:
    """(trace id, span id, sampled) of the response's `traceresponse` header."""
    match = TRACE_RESPONSE.fullmatch(response.headers.get("traceresponse", ""))
    assert match, f"no valid traceresponse: {response.headers.get('traceresponse')!r}"
    return match.group(1), match.group(2), bool(int(match.group(3), 16) & 1)


def spans_named(spans: list[ReceivedSpan], fragment: str) -> list[ReceivedSpan]:
    return [span for span in spans if fragment in span.name]


def log_records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# --- One change, one trace ----------------------------------------------------------------------


def test_a_product_change_is_one_trace_from_the_request_to_the_socket_and_the_webhook(
    traced_stack: TracedStack, settings
):
    """Given a member with a socket open, a webhook endpoint, and the owner signed in,
    when the owner changes a product,
    then the trace of that PATCH (its `traceresponse`) holds the server span (route template,
    permission, tenant), the SQL it ran, the task that fanned the event out, the webhook's
    delivery (its HTTP call) and the push to the member's socket on the WebSocket server, every
    one of them with the tenant; and no span or log line carries the token, a password or an
    email."""
    from kernel.context import tenant_context
    from webhooks import services as webhook_services

    stack = traced_stack
    tenant = make_tenant(name="Traced")
    owner = owner_of(tenant)
    reader = member_with_role(tenant, "viewer")
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = True
    with WebhookReceiver() as hooks:
        with tenant_context(tenant.id):
            webhook_services.webhook_endpoint_create(
                url=f"{hooks.url}/hook", topics=["catalog.product.updated"]
            )
        with (
            signed_in(stack.server, owner, tenant) as (http, token),
            signed_in(stack.server, reader, tenant) as (_, reader_token),
        ):
            created = http.post(PRODUCTS, json={"sku": "TR-1", "name": "Traced", "price": "1.00"})
            assert created.status_code == 201, created.text
            url = f"{stack.server.ws_url}/ws/v1/notifications/?token={reader_token}"
            with connect(url, open_timeout=CLIENT_TIMEOUT) as ws:
                assert json.loads(ws.recv(timeout=CLIENT_TIMEOUT)) == {"type": "authenticated"}

                # When the owner changes the product
                changed = http.patch(
                    product_url(created.json()["id"]),
                    json={"name": "Traced again"},
                    headers={"If-Match": created.headers.get("ETag", "*")},
                )
                assert changed.status_code == 200, changed.text
                trace_id, server_span_id, sampled = trace_response(changed)
                assert sampled

                # ...the member's socket hears of it
                while True:
                    message = json.loads(ws.recv(timeout=CLIENT_TIMEOUT))
                    if message.get("topic") == "catalog.product.updated":
                        break
            hooks.wait_for(1)

    # Then one trace holds it all
    def complete(spans: list[ReceivedSpan]) -> bool:
        mine = [s for s in spans if s.trace_id == trace_id]
        return all(
            spans_named(mine, fragment)
            for fragment in ("PATCH", FAN_OUT_TASK, WEBHOOK_TASK, "POST", "notification push")
        )

    stack.receiver.wait_for(complete, "the PATCH's whole trace")
    spans = stack.receiver.trace(trace_id)
    tenant_id = str(tenant.id)

    (server,) = [s for s in spans if s.kind == "SERVER"]
    assert server.span_id == server_span_id
    assert server.service == "tenantapi-asgi"
    assert server.attributes["http.route"] == "/api/v1/products/<uuid:pk>/"
    assert server.name == "PATCH /api/v1/products/<uuid:pk>/"
    assert server.attributes["tenantapi.permission"] == "catalog.write"
    assert server.attributes["tenant.id"] == tenant_id

    sql = [s for s in spans if s.attributes.get("db.system") == "postgresql"]
    updates = [s for s in sql if str(s.attributes.get("db.statement", "")).startswith("UPDATE")]
    assert updates, [s.attributes.get("db.statement") for s in sql]
    assert all(s.attributes.get("tenant.id") == tenant_id for s in updates)

    tasks = [s for s in spans if s.kind == "CONSUMER" and s.service == "tenantapi-worker"]
    assert {FAN_OUT_TASK, WEBHOOK_TASK} <= {s.attributes.get("celery.task_name") for s in tasks}
    assert all(s.attributes.get("tenant.id") == tenant_id for s in tasks)

    (delivery,) = [s for s in spans if s.kind == "CLIENT" and s.name == "POST"]
    assert delivery.service == "tenantapi-worker"

    (push,) = spans_named(spans, "notification push")
    assert push.kind == "CONSUMER"
    assert push.service == "tenantapi-asgi"
    assert push.attributes["tenant.id"] == tenant_id
    # Linked to the socket's own span, in the trace the socket was opened in.
    assert len(push.links) == 1
    assert push.links[0][0] != trace_id

    # ...and nothing secret left in a span or a log line
    secrets = [token, reader_token, DEFAULT_PASSWORD, owner.email, reader.email]
    for span in stack.receiver.spans:
        for text in span.texts():
            assert not any(secret in text for secret in secrets), (span.name, text)
    for text in (stack.server.log(), stack.worker.output):
        assert not any(secret in text for secret in secrets)


# --- The outbox relay sends an event late: still the request's trace ----------------------------


def test_an_event_the_relay_sends_later_belongs_to_the_request_that_made_the_change(
    otlp_receiver: OtlpReceiver,
    throwaway_redis: RedisServer,
    live_asgi_server_factory: Callable[..., LiveServer],
):
    """Given the API's broker down when the owner changes a product (its event waits in the
    outbox, kernel/events/outbox.py), and a member's socket and a webhook endpoint listening,
    when the relay (the beat job, sent by hand to a worker on the suite's broker) sends it later,
    then the relay's send is a child of the trace context kept in the outbox row: in the PATCH's
    trace, linked to the relay run's own span (another trace), with the tenant; and the event's
    task, the fan-out, the webhook's delivery and the push to the socket follow it there."""
    from kernel.context import tenant_context
    from webhooks import services as webhook_services

    tenant = make_tenant(name="Traced Relay")
    owner = owner_of(tenant)
    reader = member_with_role(tenant, "viewer")
    tenant_id = str(tenant.id)
    queue = f"tests-tracing-relay-{uuid.uuid4().hex[:12]}"
    traced = {
        **otel_environment(otlp_receiver),
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "WEBHOOKS_QUEUE": queue,
        "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
        # Due for the relay at once (the default waits 5 min).
        "OUTBOX_RELAY_DELAY_SECONDS": "0",
    }
    # The API's broker alone is the throwaway Redis; its socket layer is the suite's.
    server = live_asgi_server_factory(**traced, CELERY_BROKER_URL=throwaway_redis.url(1))
    worker = CeleryWorker(queue=queue, env={**worker_environment(), **traced})
    worker.start()
    try:
        with WebhookReceiver() as hooks:
            # Not the `settings` fixture: the worker's environment reads the settings module.
            with tenant_context(tenant.id), override_settings(WEBHOOKS_ALLOW_PRIVATE_TARGETS=True):
                webhook_services.webhook_endpoint_create(
                    url=f"{hooks.url}/hook", topics=["catalog.product.updated"]
                )
            with (
                signed_in(server, owner, tenant) as (http, _),
                signed_in(server, reader, tenant) as (_, reader_token),
            ):
                url = f"{server.ws_url}/ws/v1/notifications/?token={reader_token}"
                with connect(url, open_timeout=CLIENT_TIMEOUT) as ws:
                    assert json.loads(ws.recv(timeout=CLIENT_TIMEOUT)) == {"type": "authenticated"}

                    # When the broker is down as the owner makes and changes a product
                    throwaway_redis.stop()
                    created = http.post(
                        PRODUCTS, json={"sku": "TR-R", "name": "Relayed", "price": "1.00"}
                    )
                    assert created.status_code == 201, created.text
                    changed = http.patch(
                        product_url(created.json()["id"]),
                        json={"name": "Relayed again"},
                        headers={"If-Match": created.headers.get("ETag", "*")},
                    )
                    assert changed.status_code == 200, changed.text
                    trace_id, _, sampled = trace_response(changed)
                    assert sampled
                    with outcome():
                        (row,) = OutboxEvent.objects.filter(topic="catalog.product.updated")
                    stored_parent = row.trace_context["traceparent"].split("-")
                    assert stored_parent[1] == trace_id

                    # ...and the relay runs later, in a worker, on a broker that is up
                    with sent_through_the_broker():
                        relay = worker.send(outbox_relay_task)
                    assert worker.wait_for_task(relay.id)

                    # ...the member's socket hears of the change
                    while True:
                        message = json.loads(ws.recv(timeout=CLIENT_TIMEOUT))
                        if message.get("topic") == "catalog.product.updated":
                            break
            hooks.wait_for(1)
    finally:
        worker.stop()

    # Then the relay's send, and all that follows it, is in the PATCH's trace
    def complete(spans: list[ReceivedSpan]) -> bool:
        mine = [s for s in spans if s.trace_id == trace_id]
        return bool(
            spans_named(mine, "outbox relay")
            and all(
                spans_named(mine, fragment)
                for fragment in (FAN_OUT_TASK, WEBHOOK_TASK, "POST", "notification push")
            )
            and [s for s in spans if s.attributes.get("celery.task_name") == RELAY_TASK]
        )

    otlp_receiver.wait_for(complete, "the relayed event's spans in the PATCH's trace")
    spans = otlp_receiver.trace(trace_id)
    by_id = {s.span_id: s for s in spans}

    # The relay run: a task of its own, in a trace of its own (beat's jobs start one)
    (relay_run,) = [
        s
        for s in otlp_receiver.spans
        if s.kind == "CONSUMER" and s.attributes.get("celery.task_name") == RELAY_TASK
    ]
    assert relay_run.trace_id != trace_id

    # The send of this event: a child of the span the row kept, linked to the relay run
    (relayed,) = [
        s
        for s in spans_named(spans, "outbox relay")
        if s.attributes.get("messaging.message.id") == str(row.id)
    ]
    assert relayed.service == "tenantapi-worker"
    assert relayed.kind == "PRODUCER"
    assert relayed.parent_span_id == stored_parent[2]
    assert relayed.links == [(relay_run.trace_id, relay_run.span_id)]
    assert relayed.attributes["tenant.id"] == tenant_id
    assert relayed.attributes["tenantapi.outbox.attempts"] == 1
    # The row's span is the PATCH's own, exported by the API
    assert by_id[stored_parent[2]].service == "tenantapi-asgi"

    # The event's task runs under the relay's send (through the publish span Celery makes)
    def ancestors(span: ReceivedSpan) -> list[str]:
        chain = []
        while span.parent_span_id in by_id:
            span = by_id[span.parent_span_id]
            chain.append(span.span_id)
        return chain

    tasks = [s for s in spans if s.kind == "CONSUMER" and s.service == "tenantapi-worker"]
    names = {s.attributes.get("celery.task_name") for s in tasks}
    assert {event_dispatch_task.name, FAN_OUT_TASK, WEBHOOK_TASK} <= names
    (dispatch,) = [
        s for s in tasks if s.attributes.get("celery.task_name") == event_dispatch_task.name
    ]
    assert relayed.span_id in ancestors(dispatch)
    assert all(s.attributes.get("tenant.id") == tenant_id for s in tasks), [
        (s.attributes.get("celery.task_name"), s.attributes.get("tenant.id")) for s in tasks
    ]

    (delivery,) = [s for s in spans if s.kind == "CLIENT" and s.name == "POST"]
    assert delivery.service == "tenantapi-worker"
    assert relayed.span_id in ancestors(delivery)

    (push,) = spans_named(spans, "notification push")
    assert push.service == "tenantapi-asgi"
    assert push.attributes["tenant.id"] == tenant_id
    # The relay run's trace holds the run and nothing of the event's
    assert {s.name for s in otlp_receiver.trace(relay_run.trace_id)} & {
        FAN_OUT_TASK,
        "notification push",
    } == set()


# --- W3C Trace Context in and out ---------------------------------------------------------------


def test_an_incoming_traceparent_is_continued_and_an_invalid_one_starts_a_trace(
    otlp_receiver: OtlpReceiver, live_asgi_server_factory: Callable[..., LiveServer]
):
    """A valid `traceparent` makes the server span its child, in the caller's trace; an invalid
    one is ignored: a new trace, a 200, no error logged. The answer names the trace either way,
    and so do the request's log lines."""
    server = live_asgi_server_factory(**otel_environment(otlp_receiver))
    caller_trace, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]

    with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as http:
        continued = http.get(
            "/healthz",
            headers={"traceparent": f"00-{caller_trace}-{caller_span}-01", "X-Request-ID": "tp-1"},
        )
        invalid = http.get(
            "/healthz", headers={"traceparent": "00-not-a-trace-01", "X-Request-ID": "tp-2"}
        )

    assert continued.status_code == 200
    trace_id, span_id, sampled = trace_response(continued)
    assert (trace_id, sampled) == (caller_trace, True)
    assert span_id != caller_span
    assert invalid.status_code == 200
    new_trace, _, _ = trace_response(invalid)
    assert new_trace != caller_trace

    spans = otlp_receiver.wait_for(
        lambda spans: {caller_trace, new_trace} <= {s.trace_id for s in spans}, "both requests"
    )
    (server_span,) = [s for s in spans if s.trace_id == caller_trace and s.kind == "SERVER"]
    assert server_span.parent_span_id == caller_span
    assert server_span.span_id == span_id
    (fresh,) = [s for s in spans if s.trace_id == new_trace and s.kind == "SERVER"]
    assert fresh.parent_span_id == ""

    records = log_records(server.log())
    assert [r["trace_id"] for r in records if r.get("request_id") == "tp-1"] == [caller_trace]
    assert [r["trace_id"] for r in records if r.get("request_id") == "tp-2"] == [new_trace]
    assert not [r for r in records if r.get("level") in {"error", "critical"}]


def test_gunicorn_exports_the_server_span_with_its_route(
    otlp_receiver: OtlpReceiver, live_wsgi_server_factory: Callable[..., LiveServer]
):
    """Under gunicorn (WSGI), as the API is deployed: the same server span, route and header."""
    tenant = make_tenant(name="Traced WSGI")
    server = live_wsgi_server_factory(**otel_environment(otlp_receiver))
    with signed_in(server, owner_of(tenant), tenant) as (http, token):
        listed = http.get(PRODUCTS)
    assert listed.status_code == 200, listed.text
    trace_id, span_id, _ = trace_response(listed)

    otlp_receiver.wait_for(
        lambda spans: any(s.trace_id == trace_id and s.kind == "SERVER" for s in spans),
        "the list's server span",
    )
    (server_span,) = [s for s in otlp_receiver.trace(trace_id) if s.kind == "SERVER"]
    assert server_span.service == "tenantapi-api"
    assert server_span.span_id == span_id
    assert server_span.attributes["http.route"] == "/api/v1/products/"
    assert server_span.attributes["tenantapi.permission"] == "catalog.read"
    assert server_span.attributes["tenant.id"] == str(tenant.id)
    for span in otlp_receiver.spans:
        assert not any(token in text for text in span.texts())


def test_a_sampled_out_parent_is_not_exported_but_keeps_its_ids(
    otlp_receiver: OtlpReceiver, live_asgi_server_factory: Callable[..., LiveServer]
):
    """Parent-based sampling: a caller that did not sample its trace gets none of ours exported;
    the answer and the slow-request line still name the trace, for the operator to search."""
    server = live_asgi_server_factory(**otel_environment(otlp_receiver), SLOW_REQUEST_MS="0")
    caller_trace = uuid.uuid4().hex
    with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as http:
        unsampled = http.get(
            "/healthz",
            headers={"traceparent": f"00-{caller_trace}-{uuid.uuid4().hex[:16]}-00"},
        )
        # A sampled request after it: once its span is in, the unsampled one's would be too.
        sampled = http.get("/healthz")
    assert trace_response(unsampled)[0] == caller_trace
    assert trace_response(unsampled)[2] is False
    sampled_trace = trace_response(sampled)[0]
    otlp_receiver.wait_for(
        lambda spans: any(s.trace_id == sampled_trace for s in spans), "the sampled request"
    )
    assert otlp_receiver.trace(caller_trace) == []
    slow = [r for r in log_records(server.log()) if r.get("event") == "slow_request"]
    assert caller_trace in {r["trace_id"] for r in slow}
    assert {r["route"] for r in slow} == {"/healthz"}


# --- Tracing off --------------------------------------------------------------------------------


def test_without_an_endpoint_nothing_is_exported_and_the_ids_are_still_there(
    otlp_receiver: OtlpReceiver, live_asgi_server_factory: Callable[..., LiveServer]
):
    """No OTEL_EXPORTER_OTLP_ENDPOINT: no export, yet every answer carries `traceresponse`
    (not sampled), an incoming trace is continued, and the slow-query and slow-request lines
    carry the trace id."""
    server = live_asgi_server_factory(
        OTEL_EXPORTER_OTLP_ENDPOINT=None, SLOW_REQUEST_MS="0", SLOW_QUERY_MS="0"
    )
    tenant = make_tenant(name="Untraced")
    caller_trace = uuid.uuid4().hex
    with signed_in(server, owner_of(tenant), tenant) as (http, _):
        listed = http.get(
            PRODUCTS,
            headers={
                "traceparent": f"00-{caller_trace}-{uuid.uuid4().hex[:16]}-01",
                "X-Request-ID": "untraced-1",
            },
        )
        fresh = http.get(PRODUCTS, headers={"X-Request-ID": "untraced-2"})
    assert listed.status_code == 200, listed.text
    trace_id, _, sampled = trace_response(listed)
    assert (trace_id, sampled) == (caller_trace, False)
    fresh_trace, _, _ = trace_response(fresh)
    assert fresh_trace != caller_trace

    records = log_records(server.log())
    mine = [r for r in records if r.get("request_id") == "untraced-1"]
    assert {r["event"] for r in mine} >= {"request", "slow_request", "slow_query"}
    assert {r["trace_id"] for r in mine} == {caller_trace}
    assert {r["trace_id"] for r in records if r.get("request_id") == "untraced-2"} == {fresh_trace}
    assert otlp_receiver.spans == []
