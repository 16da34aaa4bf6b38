"""Operators and time: the admin shows every tenant's apps and deletes one through the same
service as the API (its tokens are revoked, the tenant's log names the operator); nothing there
creates or edits an app or a token. The hourly job deletes expired tokens and the families
nothing is left of, and leaves live ones alone."""

from datetime import timedelta

import pytest
from django.utils import timezone
from oauth2_provider.models import AccessToken

from kernel.context import operator_scope
from oauth.models import App, TokenFamily
from oauth.tasks import oauth_clear_expired_task
from tests.oauth.conftest import register_app
from tests.oauth.flow import in_process

pytestmark = pytest.mark.django_db

AUDIT = "/api/v1/audit-events/"


@pytest.fixture
def authorized(shop, wsgi_transport):
    """The shop's app, authorized by its owner: (app row, dance, token answer)."""
    _tenant, owner, owner_api = shop
    app = register_app(owner_api)
    dance = in_process(app, wsgi_transport)
    tokens = dance.tokens(email=owner.email, scope="catalog.read")
    return App.objects.get(client_id=app.client_id), dance, tokens


def test_an_operator_sees_every_tenants_apps_and_cannot_add_or_edit_one(
    operator_client, authorized
):
    app, _dance, _tokens = authorized

    listing = operator_client.get("/admin/oauth/app/")
    detail = operator_client.get(f"/admin/oauth/app/{app.pk}/change/")
    add = operator_client.get("/admin/oauth/app/add/")
    edit = operator_client.post(f"/admin/oauth/app/{app.pk}/change/", {"name": "Renamed"})

    assert listing.status_code == 200
    assert app.client_id in listing.content.decode()
    assert detail.status_code == 200
    # The secret is nowhere, not even hashed.
    assert app.client_secret not in detail.content.decode()
    assert add.status_code == 403
    assert edit.status_code == 403
    app.refresh_from_db()
    assert app.name == "Shop front"


def test_an_operator_deleting_an_app_revokes_its_tokens_and_the_log_names_the_operator(
    operator_client, operator, authorized, shop, django_capture_on_commit_callbacks
):
    app, dance, tokens = authorized
    _tenant, _owner, owner_api = shop

    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(f"/admin/oauth/app/{app.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not App.objects.filter(pk=app.pk).exists()
    with dance.client(headers={"Authorization": f"Bearer {tokens['access_token']}"}) as api:
        assert api.get("/api/v1/products/").status_code == 401
    (event,) = owner_api.get(AUDIT, {"action": "oauth.app.deleted"}).json()["results"]
    assert (event["actor_type"], event["actor_label"]) == ("operator", operator.email)


def test_the_hourly_job_deletes_expired_tokens_and_empty_families_and_keeps_live_ones(
    shop, wsgi_transport
):
    _tenant, owner, owner_api = shop
    app = register_app(owner_api)
    dance = in_process(app, wsgi_transport)
    expired = dance.tokens(email=owner.email, scope="catalog.read")
    # Another browser, another sign-in: a second family.
    live = in_process(app, wsgi_transport).tokens(email=owner.email, scope="catalog.read")
    long_ago = timezone.now() - timedelta(days=2)
    with operator_scope("test: the first token expired two days ago"):
        expired_row = AccessToken.objects.order_by("pk").first()
        AccessToken.objects.filter(pk=expired_row.pk).update(expires=long_ago)
        TokenFamily.objects.filter(tokens__access_token=expired_row).update(created_at=long_ago)
        families = TokenFamily.objects.count()

    deleted = oauth_clear_expired_task.delay().get()

    assert deleted == 1
    with operator_scope("test: what is left"):
        assert TokenFamily.objects.count() == families - 1
        assert not AccessToken.objects.filter(pk=expired_row.pk).exists()
    with dance.client(headers={"Authorization": f"Bearer {live['access_token']}"}) as api:
        assert api.get("/api/v1/products/").status_code == 200
    with dance.client(headers={"Authorization": f"Bearer {expired['access_token']}"}) as api:
        assert api.get("/api/v1/products/").status_code == 401
