"""Tasks that exist only for the test suite. The test Celery worker loads them with --include."""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import structlog
from celery import shared_task

from kernel.tracing import ContextPropagator, get_request_id, register_propagator

logger = structlog.get_logger("tests.celery_tasks")

# A second propagator, registered in both processes like a real one: proves that the mechanism,
# not only the request id, carries context into a worker.
probe_var: ContextVar[str | None] = ContextVar("probe", default=None)


REFUSED_PROBE = "refuse"


class ProbeRefused(Exception):
    pass


@contextmanager
def _restore_probe(captured: Mapping[str, Any]) -> Iterator[None]:
    # Stands for a restore that finds its context invalid (an unknown tenant, say).
    if captured.get("probe") == REFUSED_PROBE:
        raise ProbeRefused("this context may not be restored")
    token = probe_var.set(captured.get("probe"))
    try:
        yield
    finally:
        probe_var.reset(token)


register_propagator(
    ContextPropagator(
        name="test_probe",
        capture=lambda: {"probe": probe} if (probe := probe_var.get()) else {},
        restore=_restore_probe,
    )
)


@shared_task
def log_context_task(marker: str) -> None:
    """Logs one line saying what context it runs in."""
    logger.info(
        "log_context_task_ran",
        marker=marker,
        request_id_in_var=get_request_id(),
        probe_in_var=probe_var.get(),
    )


@shared_task
def fail_task() -> None:
    logger.info("fail_task_ran", request_id_in_var=get_request_id())
    raise RuntimeError("this task fails on purpose")


@shared_task
def tenant_roles_task(marker: str) -> None:
    """Logs the roles it can read: those of the tenant it was sent from, or it fails closed."""
    from kernel.tenancy.models import Role

    roles = list(Role.objects.values_list("tenant_id", "name"))
    logger.info(
        "tenant_roles",
        marker=marker,
        tenant_ids=sorted({str(tenant_id) for tenant_id, _ in roles}),
        roles=sorted(name for _, name in roles),
    )
