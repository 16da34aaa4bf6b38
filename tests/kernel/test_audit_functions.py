"""The audit log's database functions, as an attacker holding the application's role would call
them (a finding of the source review, docs/security.md): they run in the operator scope only,
under row-level security, and nobody but the application's role may call them.

PostgreSQL only: the embedded default (SQLite) has no such functions.
"""

import uuid
from contextlib import nullcontext

import pytest
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from psycopg import sql

from kernel.context import operator_scope, tenant_context
from kernel.tenancy.models import AuditEvent
from kernel.tenancy.rls import AUDIT_FUNCTIONS, audit_role_name
from tests.factories import make_tenant
from tests.helpers import outcome
from tests.kernel.test_audit import add_event

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's functions"),
]

CALLS = [
    "SELECT tenants_auditevent_prune(now() - interval '2 days')",
    "SELECT tenants_platformauditevent_prune(now() - interval '2 days')",
    "SELECT tenants_auditevent_purge_tenant('{tenant}'::uuid)",
    "SELECT tenants_auditevent_prune_tenants("
    "ARRAY['{tenant}'::uuid], ARRAY[now() - interval '2 days'])",
]


@pytest.fixture
def old_events():
    """Two tenants' events from long ago, past any retention."""
    alpha, beta = make_tenant(name="Alpha"), make_tenant(name="Beta")
    return alpha, [add_event(alpha, days_ago=30), add_event(beta, days_ago=30)]


def still_there(events) -> bool:
    with outcome():
        return AuditEvent.objects.filter(pk__in=[event.pk for event in events]).count() == len(
            events
        )


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("scope", ["none", "a tenant's"])
def test_the_application_role_outside_the_operator_scope_deletes_nothing(old_events, call, scope):
    tenant, events = old_events
    entered = tenant_context(tenant.id) if scope == "a tenant's" else nullcontext()
    with (
        entered,
        connection.cursor() as cursor,
        pytest.raises(DatabaseError, match="operator scope only"),
        transaction.atomic(),
    ):
        cursor.execute(call.format(tenant=tenant.id))

    assert still_there(events)


def test_the_functions_belong_to_a_role_that_row_level_security_applies_to():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT r.rolname, r.rolsuper, r.rolbypassrls FROM pg_proc p"
            " JOIN pg_roles r ON r.oid = p.proowner WHERE p.proname = ANY(%s)",
            [[function.split("(")[0] for function in AUDIT_FUNCTIONS]],
        )
        owners = cursor.fetchall()

    assert owners == [(audit_role_name(), False, False)]


def test_no_role_but_the_applications_may_call_them():
    stranger = f"audit_stranger_{uuid.uuid4().hex[:8]}"
    with connection.schema_owner(), connection.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(stranger)))
        try:
            for function in AUDIT_FUNCTIONS:
                cursor.execute(
                    "SELECT has_function_privilege(%s, %s, 'EXECUTE'),"
                    " has_function_privilege(%s, %s, 'EXECUTE')",
                    [stranger, function, settings.DATABASE_APP_ROLE, function],
                )
                assert cursor.fetchone() == (False, True), function
        finally:
            cursor.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(stranger)))


def test_in_the_operator_scope_the_prune_still_deletes_only_what_is_past_the_cutoff(old_events):
    tenant, events = old_events
    recent = add_event(tenant)

    with operator_scope("test: the prune job"), transaction.atomic(), connection.cursor() as c:
        c.execute("SELECT tenants_auditevent_prune(now() - interval '2 days')")
        (deleted,) = c.fetchone()

    assert deleted >= 2
    assert not still_there(events)
    assert still_there([recent])
