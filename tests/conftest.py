"""Fixtures shared across the suite. A folder's own conftest.py adds those of its area only."""

from enum import StrEnum

import pytest
from django.test import Client
from rest_framework.test import APIClient

from kernel.tenancy.models import Membership, Tenant
from tests.catalog_helpers import editor_client
from tests.factories import DEFAULT_PASSWORD, make_member, make_tenant, make_user
from tests.helpers import client_for

# Fixture modules shared across the suite; each lives in tests/fixtures/.
pytest_plugins: list[str] = [
    "tests.fixtures.servers",
    "tests.fixtures.redis_sentinel",
    "tests.fixtures.brokers",
    "tests.fixtures.celery_worker",
    "tests.fixtures.browser",
    "tests.fixtures.s3_server",
    "tests.fixtures.pgbouncer",
    "tests.fixtures.pg_replica",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "tenant(name=..., plan_code=...): what the `tenant` fixture passes to make_tenant",
    )


class TestAuditAction(StrEnum):
    """The audit actions the tests record directly (kernel/audit.py refuses unregistered ones)."""

    THING_DONE = "tests.thing.done"
    SECRET_KEPT = "tests.secret.kept"
    OLD_THING = "tests.old.thing"
    SYSTEM_THING = "tests.system.thing"
    ADMIN_SEEN = "tests.admin.seen"
    MATRIX_RECORDED = "tests.matrix.recorded"
    STEP_N0 = "tests.step.n0"
    STEP_N1 = "tests.step.n1"
    STEP_N2 = "tests.step.n2"
    STEP_N3 = "tests.step.n3"
    STEP_N4 = "tests.step.n4"


@pytest.fixture(autouse=True, scope="session")
def _test_audit_actions() -> None:
    from kernel import audit

    audit.register_actions(TestAuditAction)


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def tenant(request: pytest.FixtureRequest) -> Tenant:
    """A tenant and its owner, made through the services by `make_tenant`.

    A module (or a test) that wants a given name or plan says so with a marker, which is passed
    on to `make_tenant` as it is: `pytestmark = [..., pytest.mark.tenant(plan_code="pro")]`.
    Without one, `make_tenant`'s defaults: a generated name, the free plan.
    """
    marker = request.node.get_closest_marker("tenant")
    return make_tenant(**marker.kwargs) if marker else make_tenant()


@pytest.fixture
def editor(tenant) -> APIClient:
    """A member of `tenant` holding the built-in editor role, signed in."""
    return editor_client(tenant)


@pytest.fixture
def admin(tenant) -> Membership:
    """A member of `tenant` holding the built-in admin role."""
    return make_member(tenant, roles=["admin"])


@pytest.fixture
def admin_client(tenant, admin) -> APIClient:
    """`admin` signed in to `tenant`.

    This replaces pytest-django's fixture of the same name (a superuser's Django client): the
    operators' equivalent here is `operator_client`.
    """
    return client_for(admin.user, tenant)


@pytest.fixture
def operator():
    """An operator of the platform: a staff superuser, who works in the admin."""
    return make_user(email="ops@example.com", is_staff=True, is_superuser=True)


@pytest.fixture
def operator_client(operator) -> Client:
    """`operator` signed in to the admin with their password."""
    client = Client()
    assert client.login(email=operator.email, password=DEFAULT_PASSWORD)
    return client


@pytest.fixture
def public_webhook_targets_only(settings) -> None:
    """Webhook targets under the production rule (no private address), whatever the environment
    says. A module asks for it with `pytest.mark.usefixtures`; a test that needs a local target
    says so."""
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = False
