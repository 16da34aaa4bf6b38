from enum import StrEnum

import pytest
from rest_framework.test import APIClient

# Fixture modules shared across the suite; each lives in tests/fixtures/.
pytest_plugins: list[str] = [
    "tests.fixtures.servers",
    "tests.fixtures.celery_worker",
]


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
