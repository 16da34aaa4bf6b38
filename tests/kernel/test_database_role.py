"""The restricted database role is applied per transaction, never per session (a finding of the
source review, docs/security.md): behind a pooler in transaction mode a session's SET ROLE stays
on one server connection while the client's next transaction runs on another, as the login role,
to which row-level security may not apply. And the application refuses to run as a role that
bypasses row security.

PostgreSQL only. The test database's login role is a superuser, as a careless deployment's would
be, which is what makes the role matter.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, transaction

from kernel.context import tenant_context
from kernel.tenancy.models import Role
from tests.factories import make_tenant
from tests.fixtures.servers import server_environment

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's roles")

REPO = Path(__file__).resolve().parents[2]


def as_a_pooler_would_hand_it_over() -> None:
    """What a server connection looks like when a transaction-mode pooler hands it to this client:
    whatever a previous session set is gone (here, any role)."""
    connection.ensure_connection()
    connection.connection.execute("RESET ROLE")


def current_user(cursor) -> str:
    cursor.execute("SELECT current_user")
    return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_every_transaction_runs_as_the_restricted_role_whatever_the_session_holds():
    make_tenant(name="Alpha")

    as_a_pooler_would_hand_it_over()
    with connection.cursor() as cursor:
        # A lone statement, then a transaction, each on a "fresh" server connection
        assert current_user(cursor) == settings.DATABASE_APP_ROLE
        as_a_pooler_would_hand_it_over()
        with transaction.atomic():
            assert current_user(cursor) == settings.DATABASE_APP_ROLE
            # and row security applies: no scope, no tenant's rows, even for a superuser login
            cursor.execute("SELECT count(*) FROM tenants_role")
            assert cursor.fetchone()[0] == 0

    # Nothing of it outlives the transaction on the session
    assert connection.connection.execute("SELECT current_user").fetchone()[0] != (
        settings.DATABASE_APP_ROLE
    )


@pytest.mark.django_db(transaction=True)
def test_the_scope_still_reaches_the_rows_under_the_role():
    tenant = make_tenant(name="Alpha")
    as_a_pooler_would_hand_it_over()

    with tenant_context(tenant.id):
        assert Role.objects.count() == 4  # the built-in roles


def manage(*arguments: str, **environment: str) -> subprocess.CompletedProcess:
    """`manage.py` in a process of its own, against the test database."""
    return subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=REPO,
        env=server_environment(**environment),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# Any command that queries: the refusal comes with the connection.
QUERY = ("shell", "-c", "from kernel.tenancy.models import Plan; print(Plan.objects.count())")


@pytest.mark.django_db
def test_a_superuser_as_the_applications_role_is_refused():
    # The login role (a superuser in the test cluster) as the role of every transaction
    refused = manage(*QUERY, DATABASE_APP_ROLE="")

    assert refused.returncode != 0
    assert "superuser or BYPASSRLS" in refused.stderr
    assert "DATABASE_ALLOW_PRIVILEGED_ROLE" in refused.stderr


@pytest.mark.django_db
def test_a_development_machine_may_say_so():
    allowed = manage(*QUERY, DATABASE_APP_ROLE="", DATABASE_ALLOW_PRIVILEGED_ROLE="true")

    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.django_db
def test_the_restricted_role_passes():
    checked = manage(*QUERY)

    assert checked.returncode == 0, checked.stderr
