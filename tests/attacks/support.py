"""Shared steps of the attack modules: tenants under attack, and data the attacks aim at."""

import re
import uuid
from dataclasses import dataclass
from typing import Any

from django.core import mail
from rest_framework.test import APIClient

from kernel.context import tenant_context
from kernel.tenancy.models import Role
from notifications.models import Notification
from tests.factories import make_tenant
from tests.helpers import API, client_for, outcome, owner_of, tasks_run_inline

INVITATIONS = f"{API}/invitations/"
ACCEPT = f"{API}/invitations/accept/"


@dataclass
class Tenancy:
    """A tenant, its owner, and a client signed in as that owner."""

    tenant: Any
    owner: Any
    client: APIClient


def tenancy(name: str, *, plan_code: str = "enterprise") -> Tenancy:
    # Enterprise: the attacks send many requests, and the rate limits are on.
    tenant = make_tenant(name=name, plan_code=plan_code)
    owner = owner_of(tenant)
    return Tenancy(tenant, owner, client_for(owner, tenant))


def role_id(tenant, name: str) -> str:
    with outcome():
        return str(Role.objects.get(tenant=tenant, name=name).pk)


def make_notification(tenant, user, *, topic: str = "catalog.product.updated") -> Notification:
    with tenant_context(tenant.id):
        return Notification.objects.create(
            user=user, topic=topic, data={"id": str(uuid.uuid4())}, event_id=uuid.uuid4().hex
        )


def notification_row(notification: Notification) -> Notification:
    with outcome():
        return Notification.objects.get(pk=notification.pk)


def invite(client: APIClient, tenant, email: str, roles=("viewer",), *, capture) -> str:
    """Invite `email` through the API and return the token the email carries.

    `capture` is pytest-django's `django_capture_on_commit_callbacks`: the email is sent once the
    request commits, which a test's transaction never does on its own.
    """
    mail.outbox.clear()
    with tasks_run_inline(), capture(execute=True):
        response = client.post(
            INVITATIONS,
            {"email": email, "roles": [role_id(tenant, name) for name in roles]},
            format="json",
        )
    assert response.status_code == 201, response.content
    (message,) = mail.outbox
    return re.search(r"token=([A-Za-z0-9_-]+)", message.body).group(1)
