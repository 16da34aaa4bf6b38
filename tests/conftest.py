import pytest
from rest_framework.test import APIClient

# Fixture modules shared across the suite; each lives in tests/fixtures/.
pytest_plugins: list[str] = []


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()
