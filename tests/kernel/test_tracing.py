"""X-Request-ID, the access log line, and the request context carried into Celery tasks.

This module is also the URLconf of its tests: the real URLs plus a few views under /trace/.
"""

import asyncio
import re
import uuid
from collections.abc import Iterator

import pytest
import structlog
from asgiref.sync import async_to_sync
from django.http import HttpRequest, JsonResponse
from django.test import AsyncClient, Client
from django.urls import path
from django.views.decorators.http import require_GET

from config.celery import app as celery_app
from config.urls import handler404, handler500  # noqa: F401 - this module is a URLconf
from config.urls import urlpatterns as config_urlpatterns
from kernel.context import tenant_context
from kernel.tracing import bind_actor, get_request_id
from tests.celery_tasks import REFUSED_PROBE, ProbeRefused, fail_task, log_context_task, probe_var
from tests.fixtures.celery_worker import CeleryWorker
from tests.fixtures.logs import captured_logs

pytestmark = pytest.mark.urls(__name__)

log = structlog.get_logger("tests.trace_views")
TENANT_ID = uuid.UUID("5b0c1c52-6f0a-4c43-9d0c-0f0f2d8b1a11")
USER_ID = uuid.UUID("0d1e2f30-4a5b-4c6d-8e9f-a0b1c2d3e4f5")
GENERATED = re.compile(r"[0-9a-f]{32}")


# --- Views --------------------------------------------------------------------------------------


@require_GET
def log_view(request: HttpRequest) -> JsonResponse:
    log.info("view_ran")
    return JsonResponse({"request_id": get_request_id()})


def actor_view(request: HttpRequest) -> JsonResponse:
    bind_actor(tenant_id=TENANT_ID, user_id=USER_ID)
    log.info("view_ran")
    return JsonResponse({})


def tenant_scope_view(request: HttpRequest) -> JsonResponse:
    with tenant_context(TENANT_ID):
        log.info("in_tenant_scope")
    log.info("out_of_tenant_scope")
    return JsonResponse({})


def explode_view(request: HttpRequest) -> JsonResponse:
    raise RuntimeError("the view failed")


async def async_view(request: HttpRequest) -> JsonResponse:
    marker = request.GET["marker"]
    log.info("async_view_started", marker=marker)
    await asyncio.sleep(0)  # lets the other request run in between
    log.info("async_view_finished", marker=marker)
    return JsonResponse({"request_id": get_request_id()})


def enqueue_view(request: HttpRequest) -> JsonResponse:
    bind_actor(user_id=USER_ID)
    result = log_context_task.apply_async(
        (request.GET["marker"],), queue=request.GET.get("queue") or None
    )
    log.info("after_enqueue")
    return JsonResponse({"task_id": result.id})


def enqueue_failing_view(request: HttpRequest) -> JsonResponse:
    try:
        fail_task.delay()
    except RuntimeError:
        log.info("after_failed_task")
    return JsonResponse({})


urlpatterns = [
    path("trace/log/", log_view),
    path("trace/actor/", actor_view),
    path("trace/tenant-scope/", tenant_scope_view),
    path("trace/explode/", explode_view),
    path("trace/async/", async_view),
    path("trace/enqueue/", enqueue_view),
    path("trace/enqueue-failing/", enqueue_failing_view),
    *config_urlpatterns,
]


# --- X-Request-ID -------------------------------------------------------------------------------


@pytest.mark.parametrize("request_id", ["abc", "A.b_c-1", "0" * 128, "x"])
def test_a_valid_request_id_is_echoed(client: Client, request_id: str) -> None:
    response = client.get("/trace/log/", headers={"X-Request-ID": request_id})

    assert response["X-Request-ID"] == request_id
    assert response.json()["request_id"] == request_id


@pytest.mark.parametrize(
    "request_id",
    ["x" * 129, "has space", "a/b", "semi;colon", "ünïcode", "two,values", ""],
    ids=["too-long", "space", "slash", "semicolon", "non-ascii", "comma", "empty"],
)
def test_an_invalid_request_id_is_replaced(client: Client, request_id: str) -> None:
    response = client.get("/trace/log/", headers={"X-Request-ID": request_id})

    assert GENERATED.fullmatch(response["X-Request-ID"])
    assert response.json()["request_id"] == response["X-Request-ID"]


def test_a_request_id_is_generated_when_absent(client: Client) -> None:
    first = client.get("/trace/log/")
    second = client.get("/trace/log/")

    assert GENERATED.fullmatch(first["X-Request-ID"])
    assert GENERATED.fullmatch(second["X-Request-ID"])
    assert first["X-Request-ID"] != second["X-Request-ID"]


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [("get", "/no/such/path/", 404), ("post", "/trace/log/", 405), ("get", "/trace/explode/", 500)],
)
def test_error_responses_carry_the_request_id(method: str, url: str, status: int) -> None:
    client = Client(raise_request_exception=False)

    with captured_logs() as logs:
        response = getattr(client, method)(url, headers={"X-Request-ID": "err-1"})

    assert response.status_code == status
    assert response["X-Request-ID"] == "err-1"
    assert logs.one(logger="tenantapi.access")["status"] == status


# --- The access log line ------------------------------------------------------------------------


def test_the_access_line_names_the_request_and_who_made_it(client: Client) -> None:
    with captured_logs() as logs:
        client.get("/trace/actor/?page=2&token=abc", headers={"X-Request-ID": "req-42"})

    access = logs.one(logger="tenantapi.access")
    assert access["event"] == "request"
    assert access["level"] == "info"
    assert access["request_id"] == "req-42"
    assert access["method"] == "GET"
    assert access["path"] == "/trace/actor/"
    assert access["status"] == 200
    assert isinstance(access["duration_ms"], float)
    assert access["duration_ms"] >= 0
    assert access["tenant_id"] == str(TENANT_ID)
    assert access["user_id"] == str(USER_ID)
    # The view's own line has the same context.
    view_line = logs.one(event="view_ran")
    assert view_line["request_id"] == "req-42"
    assert view_line["tenant_id"] == str(TENANT_ID)
    assert view_line["user_id"] == str(USER_ID)


def test_an_anonymous_request_has_no_actor_on_its_access_line(client: Client) -> None:
    with captured_logs() as logs:
        client.get("/trace/log/")

    access = logs.one(logger="tenantapi.access")
    assert "tenant_id" not in access
    assert "user_id" not in access


def test_lines_logged_in_a_tenant_scope_carry_the_tenant(client: Client) -> None:
    with captured_logs() as logs:
        client.get("/trace/tenant-scope/")

    assert logs.one(event="in_tenant_scope")["tenant_id"] == str(TENANT_ID)
    assert "tenant_id" not in logs.one(event="out_of_tenant_scope")


def test_nothing_of_a_request_leaks_into_the_next(client: Client) -> None:
    with captured_logs() as logs:
        client.get("/trace/actor/", headers={"X-Request-ID": "first"})
        client.get("/trace/log/", headers={"X-Request-ID": "second"})

    second = logs.find(request_id="second")
    assert {line["event"] for line in second} == {"view_ran", "request"}
    assert all("tenant_id" not in line and "user_id" not in line for line in second)
    # Nor into whatever runs on this thread afterwards.
    assert get_request_id() is None
    assert structlog.contextvars.get_contextvars() == {}


def test_under_asgi_concurrent_requests_keep_their_own_ids() -> None:
    client = AsyncClient()

    async def two_requests():
        return await asyncio.gather(
            client.get("/trace/async/?marker=a", headers={"X-Request-ID": "async-a"}),
            client.get("/trace/async/?marker=b", headers={"X-Request-ID": "async-b"}),
        )

    with captured_logs() as logs:
        first, second = async_to_sync(two_requests)()

    assert (first["X-Request-ID"], second["X-Request-ID"]) == ("async-a", "async-b")
    assert first.json()["request_id"] == "async-a"
    assert second.json()["request_id"] == "async-b"
    for marker in ("a", "b"):
        lines = logs.find(marker=marker)
        assert [line["request_id"] for line in lines] == [f"async-{marker}"] * 2
    assert logs.one(logger="tenantapi.access", request_id="async-a")["path"] == "/trace/async/"
    assert logs.one(logger="tenantapi.access", request_id="async-b")["status"] == 200


# --- Into Celery tasks --------------------------------------------------------------------------


def test_the_request_id_reaches_a_task_in_a_real_worker(
    client: Client, celery_worker: CeleryWorker
) -> None:
    marker = uuid.uuid4().hex
    response = client.get(
        f"/trace/enqueue/?marker={marker}&queue={celery_worker.queue}",
        headers={"X-Request-ID": "req-to-worker"},
    )
    task_id = response.json()["task_id"]

    finished = celery_worker.wait_for_task(task_id)
    ran = celery_worker.find(event="log_context_task_ran", marker=marker)

    assert len(ran) == 1
    assert ran[0]["request_id"] == "req-to-worker"  # bound for the task's log lines
    assert ran[0]["request_id_in_var"] == "req-to-worker"  # and restored as request_id_var
    assert ran[0]["task_id"] == task_id
    # Celery's own line about the task carries it too.
    assert "succeeded" in finished["event"]
    assert finished["request_id"] == "req-to-worker"
    # The caller's other context is not carried unless a propagator carries it.
    assert "user_id" not in ran[0]


def test_a_task_in_a_real_worker_starts_from_a_clean_context(
    client: Client, celery_worker: CeleryWorker
) -> None:
    # Given a task that ran with a request id, on the worker's only thread (solo pool)
    client.get(
        f"/trace/enqueue/?marker={uuid.uuid4().hex}&queue={celery_worker.queue}",
        headers={"X-Request-ID": "earlier-request"},
    )
    # When a task is sent from outside any request
    marker = uuid.uuid4().hex
    result = celery_worker.send(log_context_task, marker)
    celery_worker.wait_for_task(result.id)

    # Then nothing of the earlier task's context is left
    ran = celery_worker.find(event="log_context_task_ran", marker=marker)
    assert len(ran) == 1
    assert "request_id" not in ran[0]
    assert ran[0]["request_id_in_var"] is None
    # Nor on any line about it, "received" included, which the worker logs between tasks.
    about_it = [r for r in celery_worker.records() if result.id in str(r.get("event"))]
    assert about_it
    assert all("request_id" not in line for line in about_it + ran)


def test_any_registered_propagator_reaches_a_real_worker(celery_worker: CeleryWorker) -> None:
    token = probe_var.set("probe-value")
    try:
        result = celery_worker.send(log_context_task, "with-probe")
    finally:
        probe_var.reset(token)
    celery_worker.wait_for_task(result.id)

    ran = celery_worker.find(event="log_context_task_ran", task_id=result.id)
    assert ran[0]["probe_in_var"] == "probe-value"


def test_a_task_whose_context_cannot_be_restored_fails_without_running(
    celery_worker: CeleryWorker,
) -> None:
    token = probe_var.set(REFUSED_PROBE)
    try:
        result = celery_worker.send(log_context_task, "refused")
    finally:
        probe_var.reset(token)

    finished = celery_worker.wait_for_task(result.id)

    assert "ProbeRefused" in finished["event"]
    assert celery_worker.find(event="log_context_task_ran", marker="refused") == []


def test_every_line_the_worker_writes_is_json(celery_worker: CeleryWorker) -> None:
    result = celery_worker.send(log_context_task, "json-check")
    celery_worker.wait_for_task(result.id)

    records = celery_worker.records()  # fails on any line that is not a JSON object

    assert any(r["logger"] == "celery.apps.worker" for r in records)
    assert all({"event", "level", "logger", "timestamp"} <= r.keys() for r in records)


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """Tasks run inline, as in the embedded default (CELERY_TASK_ALWAYS_EAGER)."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


@pytest.mark.usefixtures("eager_tasks")
def test_an_eager_task_runs_in_the_callers_request_context_like_in_a_worker(
    client: Client,
) -> None:
    with captured_logs() as logs:
        response = client.get("/trace/enqueue/?marker=eager", headers={"X-Request-ID": "eager-1"})

    ran = logs.one(event="log_context_task_ran")
    assert ran["request_id"] == "eager-1"
    assert ran["request_id_in_var"] == "eager-1"
    assert ran["task_id"] == response.json()["task_id"]
    assert "user_id" not in ran  # as in a worker: only what propagators carry
    assert logs.one(logger="celery.app.trace")["request_id"] == "eager-1"
    # After the task, the request's own context is back, task fields gone.
    after = logs.one(event="after_enqueue")
    assert after["request_id"] == "eager-1"
    assert after["user_id"] == str(USER_ID)
    assert "task_id" not in after


@pytest.mark.usefixtures("eager_tasks")
def test_an_eager_task_that_fails_gives_the_caller_its_context_back(client: Client) -> None:
    with captured_logs() as logs:
        client.get("/trace/enqueue-failing/", headers={"X-Request-ID": "eager-fail"})

    ran = logs.one(event="fail_task_ran")
    assert ran["request_id"] == "eager-fail"
    assert "task_id" in ran
    after = logs.one(event="after_failed_task")
    assert after["request_id"] == "eager-fail"
    assert "task_id" not in after


@pytest.mark.usefixtures("eager_tasks")
def test_an_eager_task_whose_context_cannot_be_restored_fails_without_running() -> None:
    token = probe_var.set(REFUSED_PROBE)
    try:
        with captured_logs() as logs, pytest.raises(ProbeRefused):
            log_context_task.delay("refused")
    finally:
        probe_var.reset(token)

    assert logs.find(event="log_context_task_ran") == []
    assert structlog.contextvars.get_contextvars() == {}


@pytest.mark.usefixtures("eager_tasks")
def test_an_eager_task_carries_any_registered_propagator() -> None:
    token = probe_var.set("eager-probe")
    try:
        with captured_logs() as logs:
            log_context_task.delay("eager-probe")
    finally:
        probe_var.reset(token)

    ran = logs.one(event="log_context_task_ran")
    assert ran["probe_in_var"] == "eager-probe"
    assert "request_id" not in ran
