"""Fixtures of the accounts app's tests (the suite's own are in tests/conftest.py)."""

import pytest
from rest_framework.test import APIClient

from tests.helpers import client_for, owner_of


@pytest.fixture
def owner_client(tenant) -> APIClient:
    """The owner `make_tenant` gave `tenant`, signed in to it."""
    return client_for(owner_of(tenant), tenant)
