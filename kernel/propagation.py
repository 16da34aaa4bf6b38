"""The tenant travels into background tasks with the message, and nothing else does.

A task sent under a tenant runs under that tenant in the worker. A task sent without one runs
in no tenant at all, so the first query on a tenant-owned table fails closed; the operator
scope never travels: a task that must cross tenants enters `operator_scope()` itself, where a
reader can see it.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from kernel.context import current_tenant_id, no_tenant, tenant_context
from kernel.tracing import ContextPropagator, bind_actor, register_propagator


def capture_tenant() -> dict[str, str]:
    tenant_id = current_tenant_id()
    return {"tenant_id": str(tenant_id)} if tenant_id is not None else {}


@contextmanager
def restore_tenant(captured: Mapping[str, Any]) -> Iterator[None]:
    tenant_id = captured.get("tenant_id")
    if not tenant_id:
        with no_tenant():
            yield
        return
    with tenant_context(tenant_id) as restored:
        bind_actor(tenant_id=restored)
        yield


def register() -> None:
    register_propagator(
        ContextPropagator(name="tenant", capture=capture_tenant, restore=restore_tenant)
    )
