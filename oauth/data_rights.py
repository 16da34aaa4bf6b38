"""What third-party apps contribute to the data rights: to exports (kernel/exports/), a tenant's
apps (never their client secrets) and the grants a person gave them; to a person's erasure
(kernel/erasure.py), their grants and every code and token issued to apps for them deleted, and
the apps they registered kept as the tenant's."""

import uuid
from collections.abc import Iterator

from oauth2_provider.models import AccessToken, Grant, IDToken, RefreshToken

from kernel.erasure import ErasedPerson
from oauth.models import App, Consent


def app_rows() -> Iterator[dict]:
    fields = ("id", "name", "client_id", "redirect_uris", "scopes", "client_type", "created")
    for row in App.in_tenant.order_by("created", "id").values(*fields).iterator(2000):
        row["redirect_uris"] = row["redirect_uris"].split()
        row["confidential"] = row.pop("client_type") == App.CLIENT_CONFIDENTIAL
        row["created_at"] = row.pop("created")
        yield row


def personal_grant_rows(user_id: uuid.UUID) -> Iterator[dict]:
    fields = ("id", "app_id", "app__name", "scopes", "created_at", "updated_at")
    for row in Consent.objects.filter(user_id=user_id).order_by("created_at").values(*fields):
        row["app_name"] = row.pop("app__name")
        yield row


def erase_person(person: ErasedPerson) -> None:
    for model in (RefreshToken, AccessToken, IDToken, Grant):
        model.objects.filter(user_id=person.user_id).delete()
    Consent.objects.filter(user_id=person.user_id).delete()
    App.objects.filter(user_id=person.user_id).update(user=None)
