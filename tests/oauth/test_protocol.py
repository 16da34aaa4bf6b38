"""The authorization server against bad input, through the protocol's own endpoints: each way a
client, a browser or an attacker can get a request wrong is refused in the format the contract
names (RFC 6749 JSON at the token endpoint, a 400 HTML page where redirecting would be unsafe, a
redirect with `error=` where it is safe), and nothing is issued, kept or redirected that should
not be. Also what the protocol guarantees to well-behaved clients: the token answer's fields,
refresh rotation, narrowing on refresh, public clients, the tenant chosen on the consent page.

In process (WSGI, the test's own transaction), with the same HTTP requests a real client makes.
"""

import base64
import json
import secrets
from datetime import timedelta
from urllib.parse import quote

import httpx
import pytest
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_grant_model

from oauth.models import Consent
from tests.factories import DEFAULT_PASSWORD, make_member, make_tenant
from tests.helpers import client_for, outcome, owner_of
from tests.oauth.conftest import APPS, GRANTS, register_app
from tests.oauth.flow import (
    REDIRECT_URI,
    App,
    Dance,
    code_from,
    form_of,
    in_process,
    pkce_pair,
    redirect_params,
)

pytestmark = pytest.mark.django_db

PRODUCTS = "/api/v1/products/"
AUDIT = "/api/v1/audit-events/"


# --- steps -------------------------------------------------------------------------------------


def code_for(dance: Dance, *, email: str, scope: str, tenant=None) -> tuple[str, str]:
    """The dance up to the code on the redirect: (code, PKCE verifier)."""
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(8)
    page = dance.consent_page(email=email, scope=scope, state=state, challenge=challenge)
    redirect = dance.decide(page, allow=True, tenant=tenant)
    return code_from(redirect, state=state, redirect_uri=dance.app.redirect_uri), verifier


def bearer(dance: Dance, access_token: str) -> httpx.Client:
    """The app's client to the API, sending `access_token`."""
    return dance.client(headers={"Authorization": f"Bearer {access_token}"})


def refresh(dance: Dance, refresh_token: str, **extra: str) -> httpx.Response:
    return dance.token(grant_type="refresh_token", refresh_token=refresh_token, **extra)


def revoke(dance: Dance, token: str, **extra: str) -> httpx.Response:
    """RFC 7009, authenticated as the dance's app (HTTP Basic when it has a secret)."""
    app = dance.app
    data = {"token": token, **extra}
    auth = (app.client_id, app.client_secret) if app.client_secret else None
    if auth is None:
        data["client_id"] = app.client_id
    with dance.client() as backend:
        return backend.post("/oauth/revoke/", data=data, auth=auth)


def assert_oauth_error(response: httpx.Response, status: int, error: str) -> dict:
    """RFC 6749's JSON error body (section 5.2), not a problem document; and no token in it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0].strip() == "application/json"
    body = response.json()
    assert body["error"] == error, body
    assert "access_token" not in body
    assert "refresh_token" not in body
    return body


def assert_error_page(response: httpx.Response, title: str) -> None:
    """The authorization server's own 400 page: HTML, and no redirect anywhere."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "location" not in response.headers
    assert f"<h1>{title}</h1>" in response.text


def tokens_of_app(app: App) -> int:
    with outcome():
        return get_access_token_model().objects.filter(application__client_id=app.client_id).count()


def consents_of_app(app: App) -> int:
    with outcome():
        return Consent.objects.filter(app__client_id=app.client_id).count()


def signed_in(dance: Dance, email: str) -> None:
    """The dance's browser holds a session of `email` (it went through the sign-in form)."""
    dance.consent_page(email=email, scope="catalog.read", challenge=pkce_pair()[1])


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture
def app_of_shop(shop, wsgi_transport):
    """The shop's confidential app, and the dance of its owner's browser with it."""
    _tenant, _owner, owner_api = shop
    app = register_app(owner_api)
    return app, in_process(app, wsgi_transport)


@pytest.fixture
def other_tenant():
    """Another tenant, its owner, and the owner's API client."""
    tenant = make_tenant(name="Elsewhere")
    owner = owner_of(tenant)
    return tenant, owner, client_for(owner, tenant)


# --- the token endpoint: codes -----------------------------------------------------------------


def test_a_wrong_code_verifier_is_invalid_grant_and_issues_no_token(shop, app_of_shop):
    _tenant, owner, _owner_api = shop
    app, dance = app_of_shop
    code, _verifier = code_for(dance, email=owner.email, scope="catalog.read offline_access")

    answer = dance.exchange(code, pkce_pair()[0])

    assert_oauth_error(answer, 400, "invalid_grant")
    assert tokens_of_app(app) == 0


def test_a_code_burnt_by_a_wrong_verifier_is_refused_but_logs_no_replay(shop, app_of_shop):
    """A code is single-use, a failed exchange included (it may be an attacker's); but nothing
    was issued, so the right verifier after it is no replay of a code that worked."""
    _tenant, owner, owner_api = shop
    app, dance = app_of_shop
    code, verifier = code_for(dance, email=owner.email, scope="catalog.read")
    assert_oauth_error(dance.exchange(code, pkce_pair()[0]), 400, "invalid_grant")

    late = dance.exchange(code, verifier)

    assert_oauth_error(late, 400, "invalid_grant")
    assert tokens_of_app(app) == 0
    assert owner_api.get(AUDIT, {"action": "oauth.code.replayed"}).json()["results"] == []


@pytest.mark.parametrize("confidential", [True, False], ids=["confidential", "public"])
def test_a_code_exchanged_without_its_verifier_is_refused(shop, wsgi_transport, confidential):
    _tenant, owner, owner_api = shop
    app = register_app(owner_api, confidential=confidential)
    dance = in_process(app, wsgi_transport)
    code, _verifier = code_for(dance, email=owner.email, scope="catalog.read")

    answer = dance.token(grant_type="authorization_code", code=code, redirect_uri=app.redirect_uri)

    assert_oauth_error(answer, 400, "invalid_request")
    assert tokens_of_app(app) == 0


def test_a_replayed_code_is_refused_and_revokes_the_tokens_its_first_exchange_issued(
    shop, app_of_shop
):
    _tenant, owner, owner_api = shop
    app, dance = app_of_shop
    code, verifier = code_for(dance, email=owner.email, scope="catalog.read offline_access")
    first = dance.exchange(code, verifier)
    assert first.status_code == 200, first.text
    tokens = first.json()
    assert bearer(dance, tokens["access_token"]).get(PRODUCTS).status_code == 200

    replay = dance.exchange(code, verifier)

    assert_oauth_error(replay, 400, "invalid_grant")
    assert bearer(dance, tokens["access_token"]).get(PRODUCTS).status_code == 401
    assert_oauth_error(refresh(dance, tokens["refresh_token"]), 400, "invalid_grant")
    events = owner_api.get(AUDIT, {"action": "oauth.code.replayed"}).json()["results"]
    grants = owner_api.get(GRANTS).json()["results"]
    assert [(event["target_type"], event["target_id"]) for event in events] == [
        ("oauth_grant", grants[0]["id"])
    ]
    # The actor names the person and the app.
    apps = owner_api.get(APPS).json()["results"]
    app_id = next(each["id"] for each in apps if each["client_id"] == app.client_id)
    assert (events[0]["actor_id"], events[0]["actor_app_id"]) == (str(owner.pk), app_id)


def test_an_expired_code_is_invalid_grant(shop, app_of_shop):
    _tenant, owner, _owner_api = shop
    app, dance = app_of_shop
    code, verifier = code_for(dance, email=owner.email, scope="catalog.read")
    get_grant_model().objects.filter(code=code).update(
        expires=timezone.now() - timedelta(seconds=1)
    )

    assert_oauth_error(dance.exchange(code, verifier), 400, "invalid_grant")
    assert tokens_of_app(app) == 0


def test_an_app_of_another_tenant_cannot_exchange_a_code_issued_to_another_app(
    shop, app_of_shop, other_tenant, wsgi_transport
):
    _tenant, owner, _owner_api = shop
    _app, dance = app_of_shop
    other_app = register_app(other_tenant[2])
    thief = in_process(other_app, wsgi_transport)
    code, verifier = code_for(dance, email=owner.email, scope="catalog.read")

    assert_oauth_error(thief.exchange(code, verifier), 400, "invalid_grant")

    assert tokens_of_app(other_app) == 0
    # The code was never the other app's to burn: its own app still exchanges it.
    assert dance.exchange(code, verifier).status_code == 200


@pytest.mark.parametrize("secret", ["not-the-secret", None], ids=["wrong", "missing"])
def test_a_confidential_app_whose_secret_is_wrong_or_missing_is_invalid_client(
    shop, app_of_shop, wsgi_transport, secret
):
    _tenant, owner, _owner_api = shop
    app, dance = app_of_shop
    code, verifier = code_for(dance, email=owner.email, scope="catalog.read")
    impostor = in_process(App(app.client_id, secret), wsgi_transport)

    assert_oauth_error(impostor.exchange(code, verifier), 401, "invalid_client")
    assert tokens_of_app(app) == 0


# --- the token endpoint: what it issues --------------------------------------------------------


def test_the_token_answer_has_the_fields_of_rfc_6749_and_an_id_token_when_openid_is_asked(
    shop, app_of_shop
):
    _tenant, owner, _owner_api = shop
    app, dance = app_of_shop
    code, verifier = code_for(dance, email=owner.email, scope="openid email catalog.read")

    answer = dance.exchange(code, verifier)

    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].split(";")[0] == "application/json"
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["token_type"] == "Bearer"
    assert body["access_token"]
    assert isinstance(body["expires_in"], int)
    assert body["expires_in"] > 0
    assert set(body["scope"].split()) == {"openid", "email", "catalog.read"}
    claims = jwt_claims(body["id_token"])
    assert claims["aud"] == app.client_id
    assert claims["sub"] == str(owner.pk)
    assert claims["email"] == owner.email


def test_without_openid_there_is_no_id_token_and_without_offline_access_no_refresh_token(
    shop, app_of_shop
):
    _tenant, owner, _owner_api = shop
    _app, dance = app_of_shop

    tokens = dance.tokens(email=owner.email, scope="catalog.read")

    assert tokens["scope"] == "catalog.read"
    assert "refresh_token" not in tokens
    assert "id_token" not in tokens
    assert bearer(dance, tokens["access_token"]).get(PRODUCTS).status_code == 200


def test_a_public_app_completes_the_flow_with_pkce_and_no_secret(shop, wsgi_transport):
    _tenant, owner, owner_api = shop
    app = register_app(owner_api, confidential=False)
    assert app.client_secret is None
    dance = in_process(app, wsgi_transport)

    tokens = dance.tokens(email=owner.email, scope="catalog.read offline_access")

    assert bearer(dance, tokens["access_token"]).get(PRODUCTS).status_code == 200
    refreshed = refresh(dance, tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert bearer(dance, refreshed.json()["access_token"]).get(PRODUCTS).status_code == 200


# --- refresh -----------------------------------------------------------------------------------


def test_a_refresh_cannot_ask_for_a_scope_not_originally_granted(shop, app_of_shop):
    _tenant, owner, _owner_api = shop
    app, dance = app_of_shop
    tokens = dance.tokens(email=owner.email, scope="catalog.read offline_access")

    widened = refresh(
        dance, tokens["refresh_token"], scope="catalog.read catalog.write offline_access"
    )

    assert_oauth_error(widened, 400, "invalid_scope")
    assert tokens_of_app(app) == 1


def test_a_refresh_may_ask_for_fewer_scopes_and_the_new_token_has_only_those(shop, app_of_shop):
    _tenant, owner, _owner_api = shop
    _app, dance = app_of_shop
    tokens = dance.tokens(email=owner.email, scope="catalog.read catalog.write offline_access")
    product = {"sku": "NARROW-1", "name": "Narrow", "price": "1.00"}
    assert bearer(dance, tokens["access_token"]).post(PRODUCTS, json=product).status_code == 201

    narrowed = refresh(dance, tokens["refresh_token"], scope="catalog.read offline_access")

    assert narrowed.status_code == 200, narrowed.text
    assert set(narrowed.json()["scope"].split()) == {"catalog.read", "offline_access"}
    api = bearer(dance, narrowed.json()["access_token"])
    assert api.get(PRODUCTS).status_code == 200
    refused = api.post(PRODUCTS, json={**product, "sku": "NARROW-2"})
    assert refused.status_code == 403, refused.text


def test_a_rotated_refresh_token_is_refused_and_its_replay_revokes_the_whole_family(
    shop, app_of_shop
):
    _tenant, owner, _owner_api = shop
    _app, dance = app_of_shop
    first = dance.tokens(email=owner.email, scope="catalog.read offline_access")
    rotated = refresh(dance, first["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert bearer(dance, second["access_token"]).get(PRODUCTS).status_code == 200

    replay = refresh(dance, first["refresh_token"])

    assert_oauth_error(replay, 400, "invalid_grant")
    assert bearer(dance, second["access_token"]).get(PRODUCTS).status_code == 401
    assert bearer(dance, first["access_token"]).get(PRODUCTS).status_code == 401
    assert_oauth_error(refresh(dance, second["refresh_token"]), 400, "invalid_grant")


# --- revocation (RFC 7009) ---------------------------------------------------------------------


def test_a_revoked_access_token_is_refused_by_the_api_at_once(shop, app_of_shop):
    _tenant, owner, _owner_api = shop
    _app, dance = app_of_shop
    tokens = dance.tokens(email=owner.email, scope="catalog.read")
    api = bearer(dance, tokens["access_token"])
    assert api.get(PRODUCTS).status_code == 200

    revoked = revoke(dance, tokens["access_token"], token_type_hint="access_token")

    assert revoked.status_code == 200, revoked.text
    assert api.get(PRODUCTS).status_code == 401


def test_revoking_the_refresh_token_also_revokes_its_access_token(shop, app_of_shop):
    _tenant, owner, _owner_api = shop
    _app, dance = app_of_shop
    tokens = dance.tokens(email=owner.email, scope="catalog.read offline_access")
    api = bearer(dance, tokens["access_token"])
    assert api.get(PRODUCTS).status_code == 200

    revoked = revoke(dance, tokens["refresh_token"], token_type_hint="refresh_token")

    assert revoked.status_code == 200, revoked.text
    assert api.get(PRODUCTS).status_code == 401
    assert_oauth_error(refresh(dance, tokens["refresh_token"]), 400, "invalid_grant")


def test_another_app_cannot_revoke_an_apps_tokens(shop, app_of_shop, wsgi_transport):
    _tenant, owner, owner_api = shop
    _app, dance = app_of_shop
    tokens = dance.tokens(email=owner.email, scope="catalog.read offline_access")
    other = in_process(register_app(owner_api), wsgi_transport)

    for token in (tokens["access_token"], tokens["refresh_token"]):
        # RFC 7009: the answer says nothing of tokens that are not the client's.
        assert revoke(other, token).status_code == 200

    assert bearer(dance, tokens["access_token"]).get(PRODUCTS).status_code == 200
    assert refresh(dance, tokens["refresh_token"]).status_code == 200


# --- the authorization page: what must never redirect -----------------------------------------


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://evil.example/callback",
        f"{REDIRECT_URI}?next=https://evil.example/",
        "https://app.example:8443/callback",
        "https://app.example/callback/other",
        "http://app.example/callback",
    ],
    ids=["other-host", "extra-query", "other-port", "other-path", "other-scheme"],
)
def test_a_redirect_uri_the_app_did_not_register_gets_an_error_page_and_no_redirect(
    shop, app_of_shop, redirect_uri
):
    _tenant, owner, _owner_api = shop
    app, dance = app_of_shop
    signed_in(dance, owner.email)
    url = dance.authorize_url(scope="catalog.read", state="s1", challenge=pkce_pair()[1])

    response = dance.browser.get(
        url.replace(quote(REDIRECT_URI, safe=""), quote(redirect_uri, safe=""))
    )

    assert_error_page(response, "Redirect URI not registered")
    assert consents_of_app(app) == 0


def test_a_consent_form_posted_with_another_redirect_uri_gets_an_error_page_and_no_code(
    shop, app_of_shop
):
    _tenant, owner, _owner_api = shop
    app, dance = app_of_shop
    page = dance.consent_page(email=owner.email, scope="catalog.read", challenge=pkce_pair()[1])
    form = form_of(page.text)
    data = {**form.inputs, "redirect_uri": "https://evil.example/callback", "allow": "on"}
    data["tenant"] = next(value for value, _, selected in form.options["tenant"] if selected)

    response = dance.browser.post(page.url.raw_path.decode(), data=data)

    assert_error_page(response, "Redirect URI not registered")
    assert consents_of_app(app) == 0
    with outcome():
        assert not get_grant_model().objects.filter(application__client_id=app.client_id).exists()


@pytest.mark.parametrize(
    ("change", "title"),
    [
        ({"client_id": "no-such-app"}, "Unknown app"),
        ({"client_id": ""}, "Unknown app"),
        ({"code_challenge": None, "code_challenge_method": None}, "PKCE is required"),
        ({"code_challenge_method": "plain"}, "PKCE is required"),
        ({"code_challenge_method": None}, "PKCE is required"),
    ],
    ids=["unknown-client", "no-client", "no-pkce", "plain-pkce", "no-pkce-method"],
)
def test_an_unknown_client_or_a_missing_or_plain_pkce_challenge_gets_an_error_page(
    shop, app_of_shop, change, title
):
    _tenant, owner, _owner_api = shop
    app, dance = app_of_shop
    signed_in(dance, owner.email)
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": app.redirect_uri,
        "scope": "catalog.read",
        "state": "s1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(change)
    if change.get("code_challenge_method") == "plain":
        params["code_challenge"] = verifier

    response = dance.browser.get(
        "/oauth/authorize/", params={k: v for k, v in params.items() if v is not None}
    )

    assert_error_page(response, title)
    assert consents_of_app(app) == 0


@pytest.mark.parametrize(
    ("change", "title"),
    [
        ({"redirect_uri": "https://evil.example/callback"}, "Redirect URI not registered"),
        ({"client_id": "no-such-app"}, "Unknown app"),
        ({"code_challenge_method": "plain"}, "PKCE is required"),
    ],
    ids=["unregistered-redirect-uri", "unknown-client", "plain-pkce"],
)
def test_a_request_that_cannot_succeed_is_refused_before_any_sign_in(app_of_shop, change, title):
    app, dance = app_of_shop
    params = {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": app.redirect_uri,
        "scope": "catalog.read",
        "state": "s1",
        "code_challenge": pkce_pair()[1],
        "code_challenge_method": "S256",
        **change,
    }

    response = dance.browser.get("/oauth/authorize/", params=params)

    # Not sent to the sign-in page either: nothing redirects.
    assert_error_page(response, title)


# --- the authorization page: what redirects with an error --------------------------------------


def test_deny_redirects_with_access_denied_and_the_state_and_records_no_consent(shop, app_of_shop):
    _tenant, owner, owner_api = shop
    app, dance = app_of_shop
    page = dance.consent_page(
        email=owner.email, scope="catalog.read", state="the-state", challenge=pkce_pair()[1]
    )

    denied = dance.decide(page, allow=False)

    params = redirect_params(denied, app.redirect_uri)
    assert params["error"] == "access_denied"
    assert params["state"] == "the-state"
    assert "code" not in params
    assert owner_api.get(GRANTS).json()["results"] == []


def test_a_scope_the_app_did_not_register_redirects_with_invalid_scope(shop, wsgi_transport):
    _tenant, owner, owner_api = shop
    app = register_app(owner_api, scopes=["catalog.read"])
    dance = in_process(app, wsgi_transport)
    url = dance.authorize_url(
        scope="catalog.read catalog.write", state="the-state", challenge=pkce_pair()[1]
    )
    signed = dance.sign_in(dance.browser.get(url), owner.email, DEFAULT_PASSWORD)
    assert signed.status_code == 302, signed.text

    response = dance.browser.get(signed.headers["location"])

    params = redirect_params(response, app.redirect_uri)
    assert params["error"] == "invalid_scope"
    assert params["state"] == "the-state"
    assert "code" not in params
    assert consents_of_app(app) == 0


def test_approval_prompt_auto_does_not_skip_the_consent_page(shop, app_of_shop):
    _tenant, owner, _owner_api = shop
    _app, dance = app_of_shop
    dance.tokens(email=owner.email, scope="catalog.read")

    again = dance.browser.get(
        dance.authorize_url(
            scope="catalog.read", state="s2", challenge=pkce_pair()[1], approval_prompt="auto"
        )
    )

    assert again.status_code == 200, again.text
    assert "location" not in again.headers
    assert {"name": "allow", "value": "on", "type": "submit"} in form_of(again.text).buttons


# --- the tenant chosen on the consent page -----------------------------------------------------


def test_a_tenant_the_person_is_not_a_member_of_gets_the_page_again_and_no_code(
    shop, app_of_shop, other_tenant
):
    _tenant, owner, owner_api = shop
    app, dance = app_of_shop
    forged = other_tenant[0]
    page = dance.consent_page(email=owner.email, scope="catalog.read", challenge=pkce_pair()[1])

    response = dance.decide(page, allow=True, tenant=forged.id)

    assert response.status_code == 200, response.text
    assert "location" not in response.headers
    assert 'class="errors"' in response.text
    assert {"name": "allow", "value": "on", "type": "submit"} in form_of(response.text).buttons
    assert consents_of_app(app) == 0
    with outcome():
        assert not get_grant_model().objects.filter(application__client_id=app.client_id).exists()
    assert owner_api.get(GRANTS).json()["results"] == []


def test_a_person_of_two_tenants_chooses_one_and_the_token_is_bound_to_it(
    shop, app_of_shop, other_tenant
):
    tenant, owner, owner_api = shop
    _app, dance = app_of_shop
    other, _other_owner, other_api = other_tenant
    make_member(other, user=owner, roles=("viewer",))
    ours = owner_api.post(PRODUCTS, {"sku": "A-1", "name": "Ours", "price": "1.00"}, format="json")
    assert ours.status_code == 201, ours.content
    theirs = other_api.post(PRODUCTS, {"sku": "B-1", "name": "Theirs", "price": "1.00"}, "json")
    assert theirs.status_code == 201, theirs.content

    verifier, challenge = pkce_pair()
    page = dance.consent_page(email=owner.email, scope="catalog.read", challenge=challenge)
    options = form_of(page.text).options["tenant"]
    assert {(value, label) for value, label, _ in options} == {
        (str(tenant.id), tenant.name),
        (str(other.id), other.name),
    }
    assert [value for value, _, selected in options if selected] == [str(tenant.id)]

    code = code_from(
        dance.decide(page, allow=True, tenant=other.id), state="s1", redirect_uri=REDIRECT_URI
    )
    answer = dance.exchange(code, verifier)

    assert answer.status_code == 200, answer.text
    api = bearer(dance, answer.json()["access_token"])
    listed = api.get(PRODUCTS)
    assert listed.status_code == 200, listed.text
    assert [product["id"] for product in listed.json()["results"]] == [theirs.json()["id"]]
    assert api.get(f"{PRODUCTS}{ours.json()['id']}/").status_code == 404
    assert api.get(f"{PRODUCTS}{theirs.json()['id']}/").status_code == 200
