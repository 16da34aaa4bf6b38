"""Fixtures of the attack modules (the suite's own are in tests/conftest.py)."""

import pytest

from tests.attacks.support import Tenancy, tenancy


@pytest.fixture
def victim() -> Tenancy:
    return tenancy("Victim")
