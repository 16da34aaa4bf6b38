import pytest
from rest_framework.test import APIClient

# Fixture modules shared across the suite; each lives in tests/fixtures/.
pytest_plugins: list[str] = [
    "tests.fixtures.servers",
    "tests.fixtures.celery_worker",
]


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()
