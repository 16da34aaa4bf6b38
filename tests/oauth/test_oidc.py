"""OpenID Connect and the authorization server's other standard endpoints, checked with an
independent library (authlib and its JOSE implementation), as a relying party would:

- both discovery documents (OpenID Connect Discovery, RFC 8414) are valid metadata listing every
  endpoint, the scopes, PKCE `S256` only and the `code` response type;
- an ID token is signed RS256 by a key the JWKS publishes, for the app, with the issuer of the
  discovery document, the nonce of the request and the person's id; `email` and `name` only with
  their scopes; userinfo says the same;
- a rotated signing key: a server whose new key is active and old one retired publishes both, signs
  with the new one, and the ID tokens signed with the old one still verify;
- introspection (RFC 7662) answers an app about its own live tokens only, and only when it
  authenticates;
- the protocol's errors are RFC 6749 JSON, its documents `application/json`.
"""

import secrets
from datetime import UTC, datetime

import httpx
import pytest
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc import jws, jwt
from joserfc.errors import InvalidClaimError, InvalidKeyIdError
from joserfc.jwk import KeySet, RSAKey
from joserfc.jwt import JWTClaimsRegistry

from kernel.permissions import PERMISSION_DESCRIPTIONS
from tests.factories import DEFAULT_PASSWORD, make_tenant, make_user
from tests.helpers import client_for, owner_of, rsa_private_key_pem
from tests.oauth.conftest import register_app
from tests.oauth.flow import Dance, code_from, in_process, pkce_pair

OPENID_CONFIGURATION = "/.well-known/openid-configuration"
SERVER_METADATA = "/.well-known/oauth-authorization-server"
INTROSPECT = "/oauth/introspect/"
USERINFO = "/oauth/userinfo/"
# In process, as behind the TLS proxy of a deployment: the issuer is an https URL.
ORIGIN = "https://testserver"
ENDPOINTS = (
    "authorization_endpoint",
    "token_endpoint",
    "revocation_endpoint",
    "introspection_endpoint",
    "jwks_uri",
    "userinfo_endpoint",
)
IDENTITY_SCOPES = {"openid", "profile", "email", "offline_access"}


# --- helpers -------------------------------------------------------------------------------------


def secure_dance(app, transport: httpx.BaseTransport, base_url: str = ORIGIN) -> Dance:
    """The dance over https; the browser sends its `Origin` on a POST, as browsers do (Django's
    CSRF check of a secure request needs it)."""
    dance = Dance(base_url, app, transport=transport)
    dance.browser.headers["Origin"] = base_url
    return dance


def id_token_answer(dance: Dance, *, email: str, scope: str, nonce: str | None) -> dict:
    """The token endpoint's answer to the dance of a request with `scope` (and `nonce`)."""
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(8)
    extra = {"nonce": nonce} if nonce else {}
    first = dance.browser.get(
        dance.authorize_url(scope=scope, state=state, challenge=challenge, **extra)
    )
    signed_in = dance.sign_in(first, email, DEFAULT_PASSWORD)
    assert signed_in.status_code == 302, signed_in.text
    page = dance.browser.get(signed_in.headers["location"])
    assert page.status_code == 200, page.text
    redirect = dance.decide(page, allow=True)
    code = code_from(redirect, state=state, redirect_uri=dance.app.redirect_uri)
    answer = dance.exchange(code, verifier)
    assert answer.status_code == 200, answer.text
    return answer.json()


def document(client: httpx.Client, path: str) -> dict:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def verified_claims(
    id_token: str, jwks: dict, *, issuer: str, client_id: str, nonce: str, subject: str
) -> dict:
    """The ID token's claims, once authlib's JOSE library verified it as a relying party must
    (OpenID Connect Core 3.1.3.7): RS256 by the published key its `kid` names, `iss`, `aud`,
    `exp` (in the future), `iat`, `nonce`, `sub`."""
    header = jws.extract_compact(id_token.encode("ascii")).headers()
    assert header["alg"] == "RS256"
    assert header["kid"] in {key["kid"] for key in jwks["keys"]}
    token = jwt.decode(id_token, KeySet.import_key_set(jwks), algorithms=["RS256"])
    JWTClaimsRegistry(
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": client_id},
        exp={"essential": True},
        iat={"essential": True},
        nonce={"essential": True, "value": nonce},
        sub={"essential": True, "value": subject},
    ).validate(token.claims)
    return token.claims


def kid_of(pem: str) -> str:
    """The key id a JWKS gives the key: its RFC 7638 thumbprint."""
    return RSAKey.import_key(pem).thumbprint()


@pytest.fixture
def person():
    """A tenant's owner with a name, and the owner's API client."""
    owner = make_user(email="ada@example.com", name="Ada Lovelace")
    tenant = make_tenant(name="Shop", owner=owner)
    return owner_of(tenant), client_for(owner, tenant)


# --- discovery -----------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "metadata_class"),
    [
        (OPENID_CONFIGURATION, OpenIDProviderMetadata),
        (SERVER_METADATA, AuthorizationServerMetadata),
    ],
)
def test_each_discovery_document_is_valid_metadata_listing_every_endpoint(
    wsgi_transport, path, metadata_class
):
    with httpx.Client(base_url=ORIGIN, transport=wsgi_transport) as client:
        metadata = document(client, path)

        metadata_class(metadata).validate()
        assert metadata["issuer"] == ORIGIN
        for endpoint in ENDPOINTS:
            assert metadata[endpoint].startswith(f"{ORIGIN}/oauth/"), (endpoint, metadata)
        assert set(metadata["scopes_supported"]) >= {str(code) for code in PERMISSION_DESCRIPTIONS}
        assert set(metadata["scopes_supported"]) >= IDENTITY_SCOPES
        assert metadata["code_challenge_methods_supported"] == ["S256"]
        assert metadata["response_types_supported"] == ["code"]
        # The JWKS it names is served, as JSON.
        assert document(client, metadata["jwks_uri"])["keys"]


@pytest.mark.django_db
def test_both_discovery_documents_name_the_same_issuer_and_endpoints(wsgi_transport):
    with httpx.Client(base_url=ORIGIN, transport=wsgi_transport) as client:
        openid = document(client, OPENID_CONFIGURATION)
        oauth = document(client, SERVER_METADATA)

    for field in ("issuer", *ENDPOINTS):
        assert openid[field] == oauth[field], field


# --- the ID token and userinfo -------------------------------------------------------------------


@pytest.mark.django_db
def test_an_id_token_is_signed_by_a_published_key_for_the_app_and_names_the_person(
    wsgi_transport, person
):
    user, owner_api = person
    app = register_app(owner_api)
    dance = secure_dance(app, wsgi_transport)
    nonce = secrets.token_urlsafe(16)

    answer = id_token_answer(dance, email=user.email, scope="openid profile email", nonce=nonce)

    with dance.client() as relying_party:
        discovery = document(relying_party, OPENID_CONFIGURATION)
        jwks = document(relying_party, discovery["jwks_uri"])
    claims = verified_claims(
        answer["id_token"],
        jwks,
        issuer=discovery["issuer"],
        client_id=app.client_id,
        nonce=nonce,
        subject=str(user.pk),
    )
    assert claims["email"] == "ada@example.com"
    assert claims["name"] == "Ada Lovelace"
    # The checks are real: the same token with another nonce expected is refused.
    with pytest.raises(InvalidClaimError):
        verified_claims(
            answer["id_token"],
            jwks,
            issuer=discovery["issuer"],
            client_id=app.client_id,
            nonce="another",
            subject=str(user.pk),
        )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("scope", "personal_claims"),
    [
        ("openid", set()),
        ("openid email", {"email"}),
        ("openid profile", {"name"}),
        ("openid profile email", {"email", "name"}),
    ],
)
def test_the_id_token_and_userinfo_carry_email_and_name_only_with_their_scopes(
    wsgi_transport, person, scope, personal_claims
):
    user, owner_api = person
    app = register_app(owner_api)
    dance = secure_dance(app, wsgi_transport)
    nonce = secrets.token_urlsafe(16)
    answer = id_token_answer(dance, email=user.email, scope=scope, nonce=nonce)

    with dance.client() as relying_party:
        discovery = document(relying_party, OPENID_CONFIGURATION)
        jwks = document(relying_party, discovery["jwks_uri"])
        userinfo = relying_party.get(
            USERINFO, headers={"Authorization": f"Bearer {answer['access_token']}"}
        )
    claims = verified_claims(
        answer["id_token"],
        jwks,
        issuer=discovery["issuer"],
        client_id=app.client_id,
        nonce=nonce,
        subject=str(user.pk),
    )
    expected = {"email": "ada@example.com", "name": "Ada Lovelace"}
    assert {claim: claims[claim] for claim in expected if claim in claims} == {
        claim: expected[claim] for claim in personal_claims
    }
    assert userinfo.status_code == 200, userinfo.text
    assert userinfo.headers["content-type"] == "application/json"
    info = userinfo.json()
    assert info["sub"] == str(user.pk)
    assert {claim: info[claim] for claim in expected if claim in info} == {
        claim: expected[claim] for claim in personal_claims
    }


@pytest.mark.django_db
def test_a_token_without_the_openid_scope_has_no_id_token_nor_userinfo(wsgi_transport, person):
    user, owner_api = person
    app = register_app(owner_api)
    dance = secure_dance(app, wsgi_transport)

    answer = id_token_answer(dance, email=user.email, scope="catalog.read email", nonce=None)

    assert "id_token" not in answer
    with dance.client() as client:
        userinfo = client.get(
            USERINFO, headers={"Authorization": f"Bearer {answer['access_token']}"}
        )
    # Refused as a token that is not valid for userinfo (django-oauth-toolkit checks the scope
    # with the token), without a claim.
    assert userinfo.status_code == 401, userinfo.text
    assert userinfo.json()["error"] == "invalid_token"


@pytest.mark.django_db
@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token"])
def test_userinfo_without_a_valid_access_token_is_401(wsgi_transport, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    with httpx.Client(base_url=ORIGIN, transport=wsgi_transport) as client:
        response = client.get(USERINFO, headers=headers)

    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")


# --- key rotation --------------------------------------------------------------------------------


def live_id_token(server, app, user, nonce: str) -> tuple[str, dict, dict]:
    """An ID token from the live server, with the server's discovery document and JWKS."""
    dance = Dance(server.url, app)
    answer = id_token_answer(dance, email=user.email, scope="openid email", nonce=nonce)
    with dance.client() as relying_party:
        discovery = document(relying_party, OPENID_CONFIGURATION)
        jwks = document(relying_party, discovery["jwks_uri"])
    return answer["id_token"], discovery, jwks


@pytest.mark.django_db(transaction=True)
def test_a_rotated_signing_key_signs_new_id_tokens_while_the_old_ones_still_verify(
    live_asgi_server_factory, person
):
    user, owner_api = person
    app = register_app(owner_api)
    oldest, old, new = rsa_private_key_pem(), rsa_private_key_pem(), rsa_private_key_pem()
    before = live_asgi_server_factory(
        OIDC_RSA_PRIVATE_KEY=old, OIDC_RSA_PRIVATE_KEYS_INACTIVE=oldest
    )
    # The rotation: the new key signs, the old ones are retired but still published.
    after = live_asgi_server_factory(
        OIDC_RSA_PRIVATE_KEY=new, OIDC_RSA_PRIVATE_KEYS_INACTIVE=old + oldest
    )

    old_token, old_discovery, old_jwks = live_id_token(before, app, user, "n-before")
    new_token, new_discovery, new_jwks = live_id_token(after, app, user, "n-after")

    assert [key["kid"] for key in old_jwks["keys"]] == [kid_of(old), kid_of(oldest)]
    assert [key["kid"] for key in new_jwks["keys"]] == [kid_of(new), kid_of(old), kid_of(oldest)]
    for key in new_jwks["keys"]:
        assert key["kty"] == "RSA"
        assert key["alg"] == "RS256"
        assert key["use"] == "sig"
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key), "a private part is published"
    assert jws.extract_compact(old_token.encode()).headers()["kid"] == kid_of(old)
    assert jws.extract_compact(new_token.encode()).headers()["kid"] == kid_of(new)
    # Verified against the JWKS of the server after the rotation, both of them.
    for token, discovery, nonce in [
        (old_token, old_discovery, "n-before"),
        (new_token, new_discovery, "n-after"),
    ]:
        claims = verified_claims(
            token,
            new_jwks,
            issuer=discovery["issuer"],
            client_id=app.client_id,
            nonce=nonce,
            subject=str(user.pk),
        )
        assert claims["email"] == user.email
    # The new key was not published before: its tokens verify by it alone.
    with pytest.raises(InvalidKeyIdError):
        jwt.decode(new_token, KeySet.import_key_set(old_jwks), algorithms=["RS256"])


# --- introspection -------------------------------------------------------------------------------


def introspect(client: httpx.Client, token: str, *, as_app=None) -> httpx.Response:
    auth = (as_app.client_id, as_app.client_secret) if as_app is not None else None
    return client.post(INTROSPECT, data={"token": token}, auth=auth)


@pytest.fixture
def two_apps_with_tokens(wsgi_transport, person):
    """Two apps of the tenant, each holding a live access token of the person's."""
    user, owner_api = person
    apps = [register_app(owner_api), register_app(owner_api)]
    dances = [in_process(app, wsgi_transport) for app in apps]
    tokens = [dance.tokens(email=user.email, scope="catalog.read") for dance in dances]
    return dances, tokens


@pytest.mark.django_db
def test_introspection_tells_an_app_about_its_own_live_token(two_apps_with_tokens):
    (dance, _), (tokens, _) = two_apps_with_tokens
    app = dance.app

    with dance.client() as backend:
        response = introspect(backend, tokens["access_token"], as_app=app)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert answer["active"] is True
    assert answer["scope"] == "catalog.read"
    assert answer["client_id"] == app.client_id
    now = datetime.now(UTC).timestamp()
    assert isinstance(answer["exp"], int)
    assert answer["exp"] > now
    # The person's email address is the email scope's, not introspection's.
    assert "ada@example.com" not in response.text


@pytest.mark.django_db
def test_introspection_says_inactive_for_another_apps_token_and_an_unknown_one(
    two_apps_with_tokens,
):
    (dance, other_dance), (_, other_tokens) = two_apps_with_tokens

    with dance.client() as backend:
        others = introspect(backend, other_tokens["access_token"], as_app=dance.app)
        unknown = introspect(backend, secrets.token_urlsafe(22), as_app=dance.app)

    assert others.status_code == 200, others.text
    assert others.json() == {"active": False}
    assert unknown.status_code == 200, unknown.text
    assert unknown.json() == {"active": False}
    # The other app's token is live: its own app is told so.
    with other_dance.client() as backend:
        assert introspect(backend, other_tokens["access_token"], as_app=other_dance.app).json()[
            "active"
        ]


@pytest.mark.django_db
def test_introspection_says_inactive_for_a_revoked_token(two_apps_with_tokens):
    (dance, _), (tokens, _) = two_apps_with_tokens
    app = dance.app

    with dance.client() as backend:
        revoked = backend.post(
            "/oauth/revoke/",
            data={"token": tokens["access_token"], "token_type_hint": "access_token"},
            auth=(app.client_id, app.client_secret),
        )
        assert revoked.status_code == 200, revoked.text
        response = introspect(backend, tokens["access_token"], as_app=app)

    assert response.status_code == 200, response.text
    assert response.json() == {"active": False}


@pytest.mark.django_db
@pytest.mark.parametrize("credentials", ["none", "wrong secret", "the token itself"])
def test_introspection_refuses_a_request_without_client_authentication(
    two_apps_with_tokens, credentials
):
    (dance, _), (tokens, _) = two_apps_with_tokens
    app = dance.app
    access_token = tokens["access_token"]
    options = {
        "none": {},
        "wrong secret": {"auth": (app.client_id, "not-the-secret")},
        "the token itself": {"headers": {"Authorization": f"Bearer {access_token}"}},
    }[credentials]

    with dance.client() as backend:
        response = backend.post(INTROSPECT, data={"token": access_token}, **options)

    # RFC 7662 2.3: as the token endpoint answers a client that does not authenticate.
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "invalid_client"}
    assert response.headers["www-authenticate"].startswith("Basic")


# --- the protocol's error format -----------------------------------------------------------------


@pytest.mark.django_db
def test_token_endpoint_errors_are_rfc6749_json_not_problem_details(wsgi_transport, person):
    _, owner_api = person
    app = register_app(owner_api)
    dance = in_process(app, wsgi_transport)
    verifier, _ = pkce_pair()

    unknown_code = dance.exchange("not-a-code", verifier)
    unsupported = dance.token(grant_type="client_credentials")
    missing = dance.token()
    with dance.client() as backend:
        wrong_secret = backend.post(
            "/oauth/token/",
            data={"grant_type": "authorization_code", "code": "x", "code_verifier": verifier},
            auth=(app.client_id, "not-the-secret"),
        )

    for response, status, error in [
        (unknown_code, 400, "invalid_grant"),
        (unsupported, 400, "unsupported_grant_type"),
        (missing, 400, "unsupported_grant_type"),
        (wrong_secret, 401, "invalid_client"),
    ]:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["error"] == error
        assert set(body) <= {"error", "error_description", "error_uri"}, body


@pytest.mark.django_db
def test_the_password_grant_is_refused_before_any_password_is_checked(wsgi_transport, person):
    """Else any app could tell a right password from a wrong one, outside the sign-in's limits."""
    user, owner_api = person
    dance = in_process(register_app(owner_api, confidential=False), wsgi_transport)

    answers = [
        dance.token(grant_type="password", username=user.email, password=password)
        for password in (DEFAULT_PASSWORD, "not the password")
    ]

    for answer in answers:
        assert answer.status_code == 400, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.json() == {"error": "unsupported_grant_type"}
