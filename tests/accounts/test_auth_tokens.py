"""Sign-up, sign-in, refresh, logout and the 401s of every kind, through HTTP."""

import base64
import json
from datetime import timedelta

import jwt
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import mail
from rest_framework_simplejwt.tokens import AccessToken

from accounts.api.serializers import TenantSummarySerializer, UserSerializer
from kernel.context import operator_scope
from kernel.tenancy.models import Membership, Tenant
from tests.factories import DEFAULT_PASSWORD, make_tenant, make_user

pytestmark = pytest.mark.django_db

SIGNUP = "/api/v1/auth/signup/"
TOKEN = "/api/v1/auth/token/"
REFRESH = "/api/v1/auth/token/refresh/"
LOGOUT = "/api/v1/auth/logout/"
ME = "/api/v1/auth/me/"
PASSWORD_CHANGE = "/api/v1/auth/password/change/"


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def sign_in(client, email, tenant_slug=None, password=DEFAULT_PASSWORD) -> dict:
    body = {"email": email, "password": password}
    if tenant_slug:
        body["tenant"] = tenant_slug
    response = client.post(TOKEN, body, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def assert_unauthorized(response):
    assert response.status_code == 401, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.fixture
def owner_and_tenant():
    user = make_user(email="owner@example.com")
    return user, make_tenant(name="Acme", owner=user)


# --- sign-up ------------------------------------------------------------------------------


def test_signup_creates_user_and_tenant_and_signs_in(api_client):
    response = api_client.post(
        SIGNUP,
        {
            "email": "Founder@Example.com",
            "password": DEFAULT_PASSWORD,
            "name": "Founder",
            "tenant_name": "Fresh Co",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    # Absolute, as every other Location of the API
    assert response["Location"] == "http://testserver/api/v1/auth/me/"
    assert body["user"]["email"] == "founder@example.com"
    assert body["tenant"]["slug"] == "fresh-co"
    assert body["tenant"]["plan"] == "free"
    me = api_client.get(ME, **bearer(body["access"]))
    assert me.status_code == 200
    assert me.json()["roles"] == ["owner"]
    assert "tenant.manage" in me.json()["permissions"]


def test_signup_ignores_privileged_fields(api_client):
    response = api_client.post(
        SIGNUP,
        {
            "email": "sneaky@example.com",
            "password": DEFAULT_PASSWORD,
            "tenant_name": "Sneaky",
            "is_staff": True,
            "is_superuser": True,
            "id": "00000000-0000-0000-0000-000000000001",
            "tenant_id": "00000000-0000-0000-0000-000000000002",
        },
        format="json",
    )
    assert response.status_code == 201
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(email="sneaky@example.com")
    assert not user.is_staff
    assert not user.is_superuser
    assert str(user.id) != "00000000-0000-0000-0000-000000000001"
    assert response.json()["tenant"]["id"] != "00000000-0000-0000-0000-000000000002"


def test_signup_with_a_taken_slug_is_409_and_creates_nothing(api_client, owner_and_tenant):
    _, tenant = owner_and_tenant
    response = api_client.post(
        SIGNUP,
        {
            "email": "late@example.com",
            "password": DEFAULT_PASSWORD,
            "tenant_name": "x",
            "tenant_slug": tenant.slug,
        },
        format="json",
    )
    assert response.status_code == 409
    assert response["Content-Type"] == "application/problem+json"
    from django.contrib.auth import get_user_model

    assert not get_user_model().objects.filter(email="late@example.com").exists()


def test_signup_with_a_taken_email_is_409(api_client, owner_and_tenant):
    response = api_client.post(
        SIGNUP,
        {"email": "OWNER@example.com", "password": DEFAULT_PASSWORD, "tenant_name": "Again"},
        format="json",
    )
    assert response.status_code == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": DEFAULT_PASSWORD, "tenant_name": "X"}, "email"),
        ({"email": "a@example.com", "password": "short", "tenant_name": "X"}, "password"),
        ({"email": "a@example.com", "password": "12345678901", "tenant_name": "X"}, "password"),
        ({"email": "not-an-email", "password": DEFAULT_PASSWORD, "tenant_name": "X"}, "email"),
        ({"email": "a@example.com", "password": DEFAULT_PASSWORD}, "tenant_name"),
        (
            {
                "email": "a@example.com",
                "password": DEFAULT_PASSWORD,
                "tenant_name": "X",
                "tenant_slug": "no spaces ü",
            },
            "tenant_slug",
        ),
    ],
)
def test_signup_rejects_bad_input_field_by_field(api_client, body, field):
    response = api_client.post(SIGNUP, body, format="json")
    assert response.status_code == 400
    assert field in {error["field"] for error in response.json()["errors"]}
    assert not Tenant.objects.filter(name="X").exists()


# --- tokens -------------------------------------------------------------------------------


def test_token_with_a_single_membership_needs_no_slug(api_client, owner_and_tenant):
    tokens = sign_in(api_client, "owner@example.com")
    claims = AccessToken(tokens["access"])
    assert claims["tenant_id"] == str(owner_and_tenant[1].id)
    # `iat` and `exp` can come from clock readings a second apart (seen under load).
    lifetime = int(settings.ACCESS_TOKEN_LIFETIME.total_seconds())
    assert lifetime - 1 <= claims["exp"] - claims["iat"] <= lifetime


def test_token_with_several_memberships_needs_the_slug(api_client, owner_and_tenant):
    user, first = owner_and_tenant
    second = make_tenant(name="Second", owner=user)
    response = api_client.post(
        TOKEN, {"email": "owner@example.com", "password": DEFAULT_PASSWORD}, format="json"
    )
    assert response.status_code == 400
    tokens = sign_in(api_client, "owner@example.com", second.slug)
    me = api_client.get(ME, **bearer(tokens["access"])).json()
    assert me["tenant"]["slug"] == second.slug
    assert [t["slug"] for t in me["tenants"]] == [first.slug]


def test_sign_in_failures_are_indistinguishable(api_client, owner_and_tenant):
    stranger_tenant = make_tenant(name="Elsewhere")
    attempts = [
        {"email": "owner@example.com", "password": "wrong password"},
        {"email": "nobody@example.com", "password": DEFAULT_PASSWORD},
        {"email": "owner@example.com", "password": DEFAULT_PASSWORD, "tenant": "no-such-tenant"},
        {
            "email": "owner@example.com",
            "password": DEFAULT_PASSWORD,
            "tenant": stranger_tenant.slug,
        },
    ]
    bodies = []
    for attempt in attempts:
        response = api_client.post(TOKEN, attempt, format="json")
        assert response.status_code == 401
        body = response.json()
        bodies.append((body["type"], body["title"], body["detail"]))
    assert len(set(bodies)) == 1


# --- the 401s of an access token ---------------------------------------------------------------


def test_no_token_is_401(api_client):
    assert_unauthorized(api_client.get(ME))


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer not.a.jwt", "Basic dXNlcjpwYXNz", "Bearer a b", "Token abc"],
)
def test_malformed_authorization_is_401(api_client, header):
    response = api_client.get(ME, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401


def test_tampered_token_is_401(api_client, owner_and_tenant):
    access = sign_in(api_client, "owner@example.com")["access"]
    header, payload, signature = access.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["tenant_id"] = str(make_tenant().id)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert_unauthorized(api_client.get(ME, **bearer(f"{header}.{forged}.{signature}")))


def test_alg_none_is_401(api_client, owner_and_tenant):
    claims = AccessToken(sign_in(api_client, "owner@example.com")["access"]).payload
    unsigned = jwt.encode(claims, key=None, algorithm="none")
    assert_unauthorized(api_client.get(ME, **bearer(unsigned)))


def test_token_signed_with_another_key_is_401(api_client, owner_and_tenant):
    claims = AccessToken(sign_in(api_client, "owner@example.com")["access"]).payload
    forged = jwt.encode(claims, key="guessed-" + "k" * 40, algorithm="HS256")
    assert_unauthorized(api_client.get(ME, **bearer(forged)))


def test_expired_token_is_401(api_client, owner_and_tenant):
    token = AccessToken(sign_in(api_client, "owner@example.com")["access"])
    token.set_exp(lifetime=-timedelta(seconds=1))
    assert_unauthorized(api_client.get(ME, **bearer(str(token))))


def test_refresh_token_presented_as_access_is_401(api_client, owner_and_tenant):
    refresh = sign_in(api_client, "owner@example.com")["refresh"]
    assert_unauthorized(api_client.get(ME, **bearer(refresh)))


# --- refresh, logout --------------------------------------------------------------------------


def test_refresh_rotates_and_a_reused_refresh_token_is_401(api_client, owner_and_tenant):
    tokens = sign_in(api_client, "owner@example.com")
    rotated = api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json")
    assert rotated.status_code == 200
    new = rotated.json()
    assert new["refresh"] != tokens["refresh"]
    assert api_client.get(ME, **bearer(new["access"])).status_code == 200
    assert_unauthorized(api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json"))


def test_logout_revokes_the_refresh_and_the_access_tokens_at_once(api_client, owner_and_tenant):
    tokens = sign_in(api_client, "owner@example.com")
    other_session = sign_in(api_client, "owner@example.com")
    assert api_client.post(LOGOUT, {"refresh": tokens["refresh"]}, format="json").status_code == 204
    assert_unauthorized(api_client.get(ME, **bearer(tokens["access"])))
    assert_unauthorized(api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json"))
    # Another session of the same user is untouched.
    assert api_client.get(ME, **bearer(other_session["access"])).status_code == 200


def test_logout_with_a_bad_token_is_401(api_client):
    assert api_client.post(LOGOUT, {"refresh": "nope"}, format="json").status_code == 401


def test_removing_the_membership_revokes_the_tokens(
    api_client, owner_and_tenant, django_capture_on_commit_callbacks
):
    _, tenant = owner_and_tenant
    member = make_user(email="member@example.com")
    with operator_scope("test setup"):
        membership = Membership.objects.create(tenant=tenant, user=member)
    tokens = sign_in(api_client, "member@example.com")
    assert api_client.get(ME, **bearer(tokens["access"])).status_code == 200  # now cached
    owner = sign_in(api_client, "owner@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        removed = api_client.delete(f"/api/v1/members/{membership.id}/", **bearer(owner["access"]))
    assert removed.status_code == 204
    assert_unauthorized(api_client.get(ME, **bearer(tokens["access"])))
    assert_unauthorized(api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json"))


def test_a_suspended_tenant_is_403_everywhere(api_client, owner_and_tenant):
    _, tenant = owner_and_tenant
    tokens = sign_in(api_client, "owner@example.com")
    Tenant.objects.filter(pk=tenant.pk).update(status=Tenant.Status.SUSPENDED)
    for response in (
        api_client.get(ME, **bearer(tokens["access"])),
        api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json"),
        api_client.post(
            TOKEN, {"email": "owner@example.com", "password": DEFAULT_PASSWORD}, format="json"
        ),
    ):
        assert response.status_code == 403
        assert response.json()["type"].endswith("/tenant-suspended")


# --- passwords ----------------------------------------------------------------------------------


def test_password_change_revokes_earlier_tokens(
    api_client, owner_and_tenant, django_capture_on_commit_callbacks
):
    tokens = sign_in(api_client, "owner@example.com")
    assert api_client.get(ME, **bearer(tokens["access"])).status_code == 200  # now cached
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post(
            PASSWORD_CHANGE,
            {"current_password": DEFAULT_PASSWORD, "new_password": "an entirely new secret 99"},
            format="json",
            **bearer(tokens["access"]),
        )
    assert response.status_code == 200, response.content
    assert_unauthorized(api_client.get(ME, **bearer(tokens["access"])))
    assert_unauthorized(api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json"))
    assert api_client.get(ME, **bearer(response.json()["access"])).status_code == 200


def test_password_change_with_a_wrong_current_password_changes_nothing(
    api_client, owner_and_tenant
):
    tokens = sign_in(api_client, "owner@example.com")
    response = api_client.post(
        PASSWORD_CHANGE,
        {"current_password": "guess", "new_password": "an entirely new secret 99"},
        format="json",
        **bearer(tokens["access"]),
    )
    assert response.status_code == 400
    assert api_client.get(ME, **bearer(tokens["access"])).status_code == 200


def test_password_reset_is_single_use(
    api_client, owner_and_tenant, settings, django_capture_on_commit_callbacks
):
    settings.PASSWORD_RESET_URL = "https://app.example/reset?uid={uid}&token={token}"
    with django_capture_on_commit_callbacks(execute=True):
        unknown = api_client.post(
            "/api/v1/auth/password/reset/", {"email": "who@example.com"}, format="json"
        )
        known = api_client.post(
            "/api/v1/auth/password/reset/", {"email": "owner@example.com"}, format="json"
        )
    assert unknown.status_code == known.status_code == 202
    assert len(mail.outbox) == 1
    link = next(line for line in mail.outbox[0].body.splitlines() if line.startswith("https://"))
    query = dict(part.split("=", 1) for part in link.split("?", 1)[1].split("&"))
    body = {"uid": query["uid"], "token": query["token"], "new_password": "fresh start 2026 !"}
    confirm = "/api/v1/auth/password/reset/confirm/"
    assert api_client.post(confirm, body, format="json").status_code == 204
    assert api_client.post(confirm, body, format="json").status_code == 400
    sign_in(api_client, "owner@example.com", password="fresh start 2026 !")


# --- what the cached principal rebuilds ------------------------------------------------------

LONG_AGO = "2020-02-03T04:05:06Z"


@pytest.fixture
def me_twice(api_client):
    """`/auth/me` of a person who joined long ago, before and after the principal is cached,
    with the rows it speaks of."""
    user = make_user(email="joined-long-ago@example.com", name="Ada")
    get_user_model().objects.filter(pk=user.pk).update(date_joined=LONG_AGO)
    tenant = make_tenant(owner=user)
    api_client.credentials(**bearer(sign_in(api_client, user.email, tenant.slug)["access"]))
    first, second = api_client.get(ME).json(), api_client.get(ME).json()
    user_row = UserSerializer(get_user_model().objects.get(pk=user.pk)).data
    with operator_scope("test: the tenant's row"):
        tenant_row = TenantSummarySerializer(Tenant.objects.get(pk=tenant.pk)).data
    return first, second, user_row, tenant_row


@pytest.mark.parametrize("field", ["id", "email", "name", "date_joined"])
def test_the_cached_principal_rebuilds_each_field_of_the_user_as_the_row_has_it(me_twice, field):
    # A bug a new user met: date_joined came back as the time of the request.
    first, second, user_row, _ = me_twice

    assert first["user"][field] == second["user"][field] == user_row[field]


@pytest.mark.parametrize("field", ["id", "name", "slug", "status", "plan", "created_at"])
def test_the_cached_principal_rebuilds_each_field_of_the_tenant_as_the_row_has_it(me_twice, field):
    first, second, _, tenant_row = me_twice

    assert first["tenant"][field] == second["tenant"][field] == tenant_row[field]


def test_the_tenant_to_sign_in_to_is_named_by_its_slug_or_its_id(api_client):
    # A first-hour finding: the tenant's id answered "No active account found".
    user = make_user(email="two-tenants@example.com")
    first, second = make_tenant(owner=user), make_tenant(owner=user)

    by_id = api_client.post(
        TOKEN,
        {"email": user.email, "password": DEFAULT_PASSWORD, "tenant": str(second.id)},
        format="json",
    )
    by_slug = api_client.post(
        TOKEN,
        {"email": user.email, "password": DEFAULT_PASSWORD, "tenant": first.slug},
        format="json",
    )

    assert by_id.status_code == 200, by_id.content
    assert AccessToken(by_id.json()["access"])["tenant_id"] == str(second.id)
    assert AccessToken(by_slug.json()["access"])["tenant_id"] == str(first.id)
