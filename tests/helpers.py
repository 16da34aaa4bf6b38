"""Shared steps of the API tests: signing in, making members, checking problems."""

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import pytest
from django.db import DatabaseError, connection, transaction
from rest_framework.test import APIClient

from config.celery import app as celery_app
from config.settings.secrets import rsa_private_key_pem  # noqa: F401  (the tests' key maker)
from kernel.context import operator_scope
from kernel.tenancy.models import AuditLogIsAppendOnly, Membership
from tests.factories import DEFAULT_PASSWORD, make_member

API = "/api/v1"
TOKEN = f"{API}/auth/token/"
REFRESH = f"{API}/auth/token/refresh/"
ME = f"{API}/auth/me/"


def sign_in(client: APIClient, user, tenant, *, password: str = DEFAULT_PASSWORD) -> dict:
    """Sign `user` in to `tenant` through the token endpoint; `client` then sends the token."""
    response = client.post(
        TOKEN, {"email": user.email, "password": password, "tenant": tenant.slug}, format="json"
    )
    assert response.status_code == 200, response.content
    tokens = response.json()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    return tokens


def client_for(user, tenant) -> APIClient:
    """A new client signed in as `user` in `tenant`."""
    client = APIClient()
    sign_in(client, user, tenant)
    return client


def member_with_role(tenant, *role_names: str, email: str | None = None):
    """A new user who is a member of `tenant` holding the roles named (built-in or not)."""
    return make_member(tenant, roles=role_names or ("viewer",), email=email).user


def owner_of(tenant):
    """The user `make_tenant` made the tenant's owner."""
    with outcome():
        return (
            Membership.objects.select_related("user").get(tenant=tenant, roles__name="owner").user
        )


def assert_problem(response, status: int, problem: str | None = None) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    if problem is not None:
        assert body["type"].endswith(f"/{problem}"), body
    return body


def error_fields(response) -> set[str | None]:
    return {error["field"] for error in assert_problem(response, 400)["errors"]}


def tasks_run_inline() -> AbstractContextManager[None]:
    """Run Celery tasks in the test's process, whatever the test settings say.

    The suite may run with a real broker (scripts/test): a test that is about what a task does
    runs it inline instead, through Celery's own eager path.
    """
    return _tasks_eager(True)


def sent_through_the_broker() -> AbstractContextManager[None]:
    """Tasks the application sends go through the broker, as from a web process, rather than
    run inline as the test settings otherwise do: for tests with a real worker."""
    return _tasks_eager(False)


@contextmanager
def _tasks_eager(eager: bool) -> Iterator[None]:
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = eager
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = previous


def assert_not_found_for_every_method(client: APIClient, url: str, bodies: dict[str, dict]):
    """Another tenant's object, through each method: a 404 problem, never a 403."""
    for method in ("get", *bodies):
        response = getattr(client, method)(url, bodies.get(method), format="json")
        assert_problem(response, 404, "not-found")


def outcome():
    """The scope a test reads the outcome of a request in: operator scope, with explicit tenant
    filters in the query.

    Not `tenant_context()`: a test runs inside one transaction, so each request's transaction is
    a savepoint in it, and after an error response rolls that savepoint back, the database has
    also undone the request's tenant setting while the connection still believes it is applied
    for that tenant. A query in the same tenant's context would then see no rows at all, and a
    check that something is absent would pass whatever happened.
    """
    return operator_scope("a test reading the outcome of a request")


def assert_the_orm_refuses_to_change(model, pk) -> None:
    """Every way the ORM has to change or delete a row of an append-only log is refused (in the
    caller's scope)."""
    with transaction.atomic():
        stored = model.objects.get(pk=pk)
        stored.action = "tests.thing.undone"
        with pytest.raises(AuditLogIsAppendOnly):
            stored.save()
        with pytest.raises(AuditLogIsAppendOnly):
            stored.delete()
        with pytest.raises(AuditLogIsAppendOnly):
            model.objects.filter(pk=pk).update(action="tests.thing.undone")
        with pytest.raises(AuditLogIsAppendOnly):
            model.objects.filter(pk=pk).delete()
        with pytest.raises(AuditLogIsAppendOnly):
            model.objects.bulk_update([stored], ["action"])
        with pytest.raises(AuditLogIsAppendOnly):
            model.objects.update_or_create(pk=pk, defaults={"action": "tests.thing.undone"})


def assert_the_database_refuses(statement: str, *, as_schema_owner: bool = False) -> None:
    """The statement fails on an append-only log's trigger, as the application's role (the
    connection's own) or as the schema owner (what migrate runs as)."""
    as_role = connection.schema_owner() if as_schema_owner else nullcontext()
    with as_role, connection.cursor() as cursor:  # noqa: SIM117
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            cursor.execute(statement)


def waiting_for_a_lock(pid: int) -> bool:
    """Whether the PostgreSQL backend `pid` is waiting for a lock another transaction holds."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", [pid])
        return cursor.fetchone()[0] > 0


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]
