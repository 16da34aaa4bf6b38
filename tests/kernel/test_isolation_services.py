"""Two tenants made through the API: the cache and a real Celery worker keep them apart."""

import uuid

import django_redis
import pytest
from django.core.cache import cache

from kernel.context import tenant_context
from tests.celery_tasks import tenant_roles_task
from tests.factories import DEFAULT_PASSWORD

SIGNUP = "/api/v1/auth/signup/"


def signup(client, name: str) -> dict:
    response = client.post(
        SIGNUP,
        {"email": f"{name}@example.com", "password": DEFAULT_PASSWORD, "tenant_name": name},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


@pytest.fixture
def two_tenant_ids(api_client) -> tuple[uuid.UUID, uuid.UUID]:
    alpha = signup(api_client, f"alpha{uuid.uuid4().hex[:8]}")
    beta = signup(api_client, f"beta{uuid.uuid4().hex[:8]}")
    return uuid.UUID(alpha["tenant"]["id"]), uuid.UUID(beta["tenant"]["id"])


@pytest.mark.django_db
def test_the_same_cache_key_is_a_different_entry_per_tenant(two_tenant_ids):
    alpha, beta = two_tenant_ids
    with tenant_context(alpha):
        cache.set("dashboard", "alpha's numbers")
    with tenant_context(beta):
        assert cache.get("dashboard") is None
        cache.set("dashboard", "beta's numbers")
    with tenant_context(alpha):
        assert cache.get("dashboard") == "alpha's numbers"
    # In Redis itself, each entry sits under its tenant's namespace.
    keys = {key.decode() for key in django_redis.get_redis_connection("default").keys("*dashboard")}
    assert any(f"t:{alpha}:" in key for key in keys)
    assert any(f"t:{beta}:" in key for key in keys)


@pytest.mark.django_db(transaction=True)
def test_a_task_runs_in_the_tenant_it_was_sent_from(two_tenant_ids, celery_worker):
    alpha, beta = two_tenant_ids
    for tenant_id in (alpha, beta):
        with tenant_context(tenant_id):
            result = celery_worker.send(tenant_roles_task, marker=str(tenant_id))
        record = celery_worker.wait_for_task(result.id)
        assert "succeeded" in record["event"], record
        (seen,) = [r for r in celery_worker.task_records(result.id) if r["event"] == "tenant_roles"]
        assert seen["tenant_ids"] == [str(tenant_id)]
        assert sorted(seen["roles"]) == ["admin", "editor", "owner", "viewer"]
        assert seen["tenant_id"] == str(tenant_id)  # bound into the worker's log lines


@pytest.mark.django_db(transaction=True)
def test_a_task_sent_without_a_tenant_fails_closed(two_tenant_ids, celery_worker):
    result = celery_worker.send(tenant_roles_task, marker="no tenant")
    record = celery_worker.wait_for_task(result.id)
    assert "raised" in record["event"], record
    assert "NoTenantInContext" in celery_worker.output
