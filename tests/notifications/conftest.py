"""Fixtures of the notifications app's tests (the suite's own are in tests/conftest.py)."""

import ipaddress
from collections.abc import Sequence

import pytest

from kernel import outbound


@pytest.fixture
def fake_dns(monkeypatch) -> dict[str, Sequence[str]]:
    """What `outbound.resolve_host` answers for the names the test sets (a name's answer can change
    later); the system resolver for the rest."""
    answers: dict[str, Sequence[str]] = {}
    real = outbound.resolve_host

    def resolve(host: str, port: int):
        if host in answers:
            return tuple(ipaddress.ip_address(a) for a in answers[host])
        return real(host, port)

    monkeypatch.setattr(outbound, "resolve_host", resolve)
    return answers
