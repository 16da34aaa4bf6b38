"""Fixtures of the catalog's tests (the suite's own are in tests/conftest.py)."""

import pytest
from django.contrib.auth import get_user_model


@pytest.fixture
def superuser_client(client):
    """pytest-django's `client`, logged in (without a password check) as a superuser made by
    `create_superuser`: the operator of the catalog's admin tests."""
    operator = get_user_model().objects.create_superuser("ops@example.com", "ops-password-1")
    client.force_login(operator)
    return client
