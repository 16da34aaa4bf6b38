"""`manage.py catalog_seed`: the demo and benchmark catalog, written through the bulk import, as
`scripts/run` uses it."""

import io

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from config.celery import app as celery_app
from tests.factories import make_tenant
from tests.helpers import client_for, owner_of

# The import job is queued on commit: the command's own transactions must commit.
pytestmark = pytest.mark.django_db(transaction=True)


def test_the_command_seeds_a_tenants_catalog_through_an_import_job():
    tenant = make_tenant(name="Seeded")

    # `--inline` runs the job in the command's process, whatever Celery's setting, and leaves
    # the setting as it found it
    was_eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    try:
        call_command(
            "catalog_seed",
            tenant=tenant.slug,
            count=12,
            categories=3,
            prefix="DEMO",
            inline=True,
            timeout=30,
            stdout=io.StringIO(),
        )
        assert celery_app.conf.task_always_eager is False
    finally:
        celery_app.conf.task_always_eager = was_eager

    owner: APIClient = client_for(owner_of(tenant), tenant)
    products = owner.get("/api/v1/products/", {"page_size": 100}).json()["results"]
    assert len(products) == 12
    assert all(product["sku"].startswith("DEMO-") for product in products)
    jobs = owner.get("/api/v1/jobs/").json()["results"]
    assert [(job["kind"], job["status"], job["succeeded"]) for job in jobs] == [
        ("products.import", "succeeded", 12)
    ]
