"""The current tenant, held in a context variable.

A ContextVar is isolated per thread and per asyncio task, so it is safe under WSGI threads, ASGI
and Celery alike. Everything that must know the tenant (managers, row-level security, cache keys,
logs, tasks) reads it from here; nothing takes it from client input.

Two ways to hold a scope, both explicit context managers that restore what was there before:

- `tenant_context(tenant_id)`: the normal case, one tenant's rows only.
- `operator_scope(reason)`: every tenant's rows, for the admin, migrations and maintenance
  commands. Its name is loud on purpose: grep for it to audit every cross-tenant read.
"""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


class NoTenantInContext(RuntimeError):
    """A tenant-owned table was queried with no tenant in context: fail closed."""


@dataclass(frozen=True, slots=True)
class Scope:
    tenant_id: uuid.UUID | None = None
    operator: bool = False
    reason: str = ""


_NO_SCOPE = Scope()
_scope: ContextVar[Scope] = ContextVar("tenant_scope", default=_NO_SCOPE)


def current_scope() -> Scope:
    return _scope.get()


def current_tenant_id() -> uuid.UUID | None:
    return _scope.get().tenant_id


def require_tenant_id() -> uuid.UUID:
    tenant_id = _scope.get().tenant_id
    if tenant_id is None:
        raise NoTenantInContext("No tenant in context: enter tenant_context() first.")
    return tenant_id


@contextmanager
def tenant_context(tenant_id: uuid.UUID | str) -> Iterator[uuid.UUID]:
    tenant_id = tenant_id if isinstance(tenant_id, uuid.UUID) else uuid.UUID(str(tenant_id))
    token = _scope.set(Scope(tenant_id=tenant_id))
    try:
        yield tenant_id
    finally:
        _scope.reset(token)


@contextmanager
def operator_scope(reason: str) -> Iterator[None]:
    if not reason:
        raise ValueError(
            "operator_scope() needs a reason, for the audit trail of cross-tenant reads."
        )
    token = _scope.set(Scope(operator=True, reason=reason))
    try:
        yield
    finally:
        _scope.reset(token)


def enter_tenant_for_request(tenant_id: uuid.UUID) -> None:
    """Hold `tenant_id` for the rest of the current request.

    Authentication calls this once it has verified the credential; it cannot use a `with` block
    because DRF authenticates in the middle of the view. TenantScopeMiddleware wraps every
    request in `no_tenant()`, which restores the previous scope when the request ends.
    """
    _scope.set(Scope(tenant_id=tenant_id))


@contextmanager
def no_tenant() -> Iterator[None]:
    """Leave any scope: what a request or task starts with until its credential is known."""
    token = _scope.set(_NO_SCOPE)
    try:
        yield
    finally:
        _scope.reset(token)
