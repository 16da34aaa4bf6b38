"""The authorization code flow end to end against a live server (uvicorn), with a real HTTP
client doing the whole redirect dance: sign-in form with its CSRF token, consent, code, token;
then the API with the token, within its scopes and no further, until it is revoked."""

import httpx
import pytest

from tests.oauth.conftest import GRANTS, register_app
from tests.oauth.flow import Dance

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_app_acts_for_a_person_within_its_scopes_until_revoked(live_asgi_server, shop):
    _tenant, owner, owner_api = shop
    app = register_app(owner_api)
    dance = Dance(live_asgi_server.url, app)

    tokens = dance.tokens(email=owner.email, scope="catalog.read catalog.write offline_access")

    assert tokens["token_type"] == "Bearer"
    assert set(tokens["scope"].split()) == {"catalog.read", "catalog.write", "offline_access"}
    assert tokens["refresh_token"]
    api = httpx.Client(
        base_url=live_asgi_server.url,
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=20.0,
    )
    assert api.get("/api/v1/products/").status_code == 200
    created = api.post(
        "/api/v1/products/", json={"sku": "OA-1", "name": "Via app", "price": "1.00"}
    )
    assert created.status_code == 201, created.text
    # members.read is not a scope it was granted, though the owner holds it
    refused = api.get("/api/v1/members/")
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"

    # The owner sees the grant and revokes it: the very next request is refused
    grants = owner_api.get(GRANTS).json()["results"]
    assert [grant["app"]["client_id"] for grant in grants] == [app.client_id]
    assert owner_api.delete(f"{GRANTS}{grants[0]['id']}/").status_code == 204
    assert api.get("/api/v1/products/").status_code == 401
    refreshed = dance.token(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert refreshed.status_code == 400
    assert refreshed.json()["error"] == "invalid_grant"
