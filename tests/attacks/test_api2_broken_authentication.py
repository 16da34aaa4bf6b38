"""OWASP API2:2023, broken authentication.

Proves that a credential is accepted only as issued: an access token whose claims were changed,
that names another algorithm than HS256 (`none`; HS512 even with the right key; RS256, as in the
algorithm-confusion attack where a verifier is tricked into using a public key as an HMAC secret),
that has expired, or that was logged out, is a 401; a refresh token works once; guessing a
password locks the guesser out, even once the right password comes; and an API key with a known
prefix but a wrong secret is a 401 that says no more than any other.

The source review's cases of this category (docs/security.md) are proven where their endpoints
are: guessing an operator's password at the admin's sign-in (findings 1,
tests/admin/test_admin.py); guessing the current password through a stolen token's password change
and locking an owner out from many addresses (7 and 8, tests/accounts/test_login_limits.py); the
restricted database role lost behind a transaction pooler (4, tests/kernel/test_database_role.py).
"""

import base64
import hashlib
import hmac
import json
import uuid
from datetime import timedelta

import jwt
import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from kernel.permissions import Perm
from tests.attacks.support import Tenancy
from tests.factories import DEFAULT_PASSWORD, make_tenant
from tests.helpers import API, ME, REFRESH, TOKEN, assert_problem

pytestmark = pytest.mark.django_db

LOGOUT = f"{API}/auth/logout/"
TENANT = f"{API}/tenant/"
# What an attacker would try as the "public key" in an RS256/HS256 confusion.
PUBLIC_KEY_PEM = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n"
    "-----END PUBLIC KEY-----\n"
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(header: dict, claims: dict, *, key: bytes, digest=hashlib.sha256) -> str:
    """A JWT put together by hand, so that its header can claim any algorithm."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"


def signing_key() -> bytes:
    return django_settings.SIMPLE_JWT["SIGNING_KEY"].encode()


def assert_refused(token: str) -> None:
    response = APIClient().get(ME, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert_problem(response, 401, "not-authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


def issued(victim: Tenancy) -> dict:
    response = APIClient().post(
        TOKEN,
        {"email": victim.owner.email, "password": DEFAULT_PASSWORD, "tenant": victim.tenant.slug},
        format="json",
    )
    assert response.status_code == 200, response.content
    return response.json()


def claims_of(victim: Tenancy) -> dict:
    return dict(AccessToken(issued(victim)["access"]).payload)


def test_the_genuine_token_works(victim):
    # The control for every refusal below: the same claims, as issued, are accepted.
    response = APIClient().get(ME, HTTP_AUTHORIZATION=f"Bearer {issued(victim)['access']}")
    assert response.status_code == 200, response.content


def test_a_token_whose_claims_were_changed_is_refused(victim):
    header, _, signature = issued(victim)["access"].split(".")
    claims = claims_of(victim)
    claims["tenant_id"] = str(make_tenant().id)

    assert_refused(f"{header}.{b64(json.dumps(claims).encode())}.{signature}")


@pytest.mark.parametrize("signature", ["", "c2lnbmF0dXJl"])
def test_alg_none_is_refused(victim, signature):
    claims = claims_of(victim)
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    unsigned = f"{header}.{b64(json.dumps(claims).encode())}"

    assert_refused(f"{unsigned}.{signature}")


def test_hs512_is_refused_even_with_the_right_key(victim):
    token = jwt.encode(claims_of(victim), signing_key(), algorithm="HS512")

    assert_refused(token)


def test_an_rs256_header_is_refused_whatever_signs_it(victim):
    claims = claims_of(victim)
    header = {"alg": "RS256", "typ": "JWT"}

    # Signed with the server's secret, or with a public key used as an HMAC secret: a verifier
    # that took the algorithm from the header could accept either.
    assert_refused(hand_signed(header, claims, key=signing_key()))
    assert_refused(hand_signed(header, claims, key=PUBLIC_KEY_PEM.encode()))
    assert_refused(hand_signed({"alg": "HS256", "typ": "JWT"}, claims, key=PUBLIC_KEY_PEM.encode()))


def test_an_expired_token_is_refused(victim):
    token = AccessToken(issued(victim)["access"])
    token.set_exp(lifetime=-timedelta(seconds=1))

    assert_refused(str(token))


def test_logged_out_tokens_are_refused(victim):
    tokens = issued(victim)

    response = APIClient().post(LOGOUT, {"refresh": tokens["refresh"]}, format="json")

    assert response.status_code == 204
    assert_refused(tokens["access"])
    assert_problem(APIClient().post(REFRESH, {"refresh": tokens["refresh"]}, format="json"), 401)


def test_a_refresh_token_works_once(victim):
    tokens = issued(victim)

    first = APIClient().post(REFRESH, {"refresh": tokens["refresh"]}, format="json")
    replayed = APIClient().post(REFRESH, {"refresh": tokens["refresh"]}, format="json")

    assert first.status_code == 200
    assert_problem(replayed, 401)


def test_a_refresh_token_is_no_access_token(victim):
    assert_refused(issued(victim)["refresh"])


def test_guessing_a_password_locks_the_guesser_out_even_for_the_right_one(victim, settings):
    # Given a low limit, so that the attack is short; and an address of its own
    settings.LOGIN_FAILURE_LIMIT = 3
    address = f"10.9.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"

    def sign_in(password: str):
        return APIClient().post(
            TOKEN,
            {"email": victim.owner.email, "password": password},
            format="json",
            REMOTE_ADDR=address,
        )

    # When the attacker guesses wrong up to the limit, then guesses right
    guesses = [sign_in(f"guess {n}") for n in range(3)]
    right = sign_in(DEFAULT_PASSWORD)

    # Then the wrong ones were 401 and the right one, now, is a 429 that tells nothing
    assert [g.status_code for g in guesses] == [401, 401, 401]
    assert_problem(right, 429, "rate-limited")
    assert int(right["Retry-After"]) >= 1
    assert "access" not in right.json()


def test_an_api_key_with_a_known_prefix_and_a_wrong_secret_is_refused(victim):
    response = victim.client.post(
        f"{API}/api-keys/", {"name": "ci", "permissions": [Perm.MEMBERS_READ]}, format="json"
    )
    key = response.json()["key"]
    scheme, environment, prefix, secret = key.split("_", 3)
    other_secret = base64.urlsafe_b64encode(b"\0" * 32).rstrip(b"=").decode()
    forged = [
        f"{scheme}_{environment}_{prefix}_{other_secret}",
        f"{scheme}_{environment}_{prefix}_{secret[:-2]}",
        f"{scheme}_{environment}_{prefix.lower()}_{secret}",
    ]

    answers = [
        APIClient().get(TENANT, HTTP_AUTHORIZATION=f"Api-Key {candidate}") for candidate in forged
    ]

    assert all(a.status_code == 401 for a in answers), [a.status_code for a in answers]
    assert len({a.json()["detail"] for a in answers}) == 1
    # The genuine key, for contrast
    assert APIClient().get(TENANT, HTTP_AUTHORIZATION=f"Api-Key {key}").status_code == 200
