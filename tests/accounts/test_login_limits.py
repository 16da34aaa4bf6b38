"""Sign-in, signup, refresh and password reset: limited per client address and per account.

Each test calls from addresses of its own and signs in as accounts of its own, since Redis keeps
counting from one test to the next.
"""

import itertools
import uuid

import pytest
from rest_framework.test import APIClient

from tests.factories import DEFAULT_PASSWORD, make_tenant, make_user
from tests.helpers import API, REFRESH, TOKEN, assert_problem

pytestmark = pytest.mark.django_db

SIGNUP = f"{API}/auth/signup/"
PASSWORD_RESET = f"{API}/auth/password/reset/"
RATE_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")

_addresses = itertools.count(1)


def new_address() -> str:
    """An address that no other test of this run and worker uses (the keys' own scope)."""
    n = next(_addresses)
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


@pytest.fixture
def account():
    user = make_user(email=f"{uuid.uuid4().hex[:12]}@example.com")
    make_tenant(owner=user)
    return user


def sign_in(email: str, password: str, address: str, **headers):
    return APIClient().post(
        TOKEN, {"email": email, "password": password}, format="json", REMOTE_ADDR=address, **headers
    )


def assert_locked(response) -> None:
    assert_problem(response, 429, "rate-limited")
    assert int(response["Retry-After"]) >= 1
    assert response["RateLimit-Remaining"] == "0"


def fail(email: str, address: str, times: int) -> list:
    return [sign_in(email, "not the password", address) for _ in range(times)]


# --- failed sign-ins -------------------------------------------------------------------------


def test_failures_lock_the_pair_out_even_with_the_right_password(account, settings):
    # Given an account and an address
    limit = settings.LOGIN_FAILURE_LIMIT
    address = new_address()

    # When the limit of wrong passwords is sent from that address
    failures = fail(account.email, address, limit)

    # Then each is a 401 that counts down, and after them the right password is refused too,
    # for the lockout, while the account signs in from another address
    assert [r.status_code for r in failures] == [401] * limit
    assert [int(r["RateLimit-Remaining"]) for r in failures] == list(range(limit - 1, -1, -1))
    assert all(int(r["RateLimit-Limit"]) == limit for r in failures)
    locked = sign_in(account.email, DEFAULT_PASSWORD, address)
    assert_locked(locked)
    assert int(locked["Retry-After"]) <= settings.LOGIN_LOCKOUT_SECONDS
    assert int(locked["Retry-After"]) > settings.LOGIN_LOCKOUT_SECONDS - 60
    assert sign_in(account.email, DEFAULT_PASSWORD, new_address()).status_code == 200


def test_the_account_is_counted_whatever_the_case_of_its_email(account, settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    address = new_address()

    fail(account.email.upper(), address, 2)
    fail(f"  {account.email.title()} ", address, 1)

    assert_locked(sign_in(account.email, DEFAULT_PASSWORD, address))


def test_a_success_clears_its_own_pair_only(account, settings):
    # Given failures against the account from two addresses, one short of the limit each
    settings.LOGIN_FAILURE_LIMIT = 4
    here, there = new_address(), new_address()
    fail(account.email, here, 3)
    fail(account.email, there, 3)

    # When the account signs in from the first address
    success = sign_in(account.email, DEFAULT_PASSWORD, here)

    # Then that pair starts again, while the other address's failures still count
    assert success.status_code == 200
    assert int(success["RateLimit-Remaining"]) == 4
    assert [r.status_code for r in fail(account.email, here, 3)] == [401] * 3
    assert fail(account.email, there, 1)[0].status_code == 401
    assert_locked(sign_in(account.email, DEFAULT_PASSWORD, there))


def test_one_address_failing_across_accounts_is_locked_out(account, settings):
    # Given a cap of 5 failures per address across accounts (credential stuffing)
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 5
    stuffer, bystander = new_address(), new_address()

    # When an address fails once each for 5 different accounts
    attempts = [
        sign_in(f"{uuid.uuid4().hex[:12]}@example.com", "password123", stuffer) for _ in range(5)
    ]

    # Then it is locked out, for any account, right password or not; other addresses are not
    assert [r.status_code for r in attempts] == [401] * 5
    assert_locked(sign_in(account.email, DEFAULT_PASSWORD, stuffer))
    assert sign_in(account.email, DEFAULT_PASSWORD, bystander).status_code == 200


def test_one_account_failing_from_many_addresses_is_locked_out(account, settings):
    # Given a cap of 4 failures per account across addresses
    settings.LOGIN_ACCOUNT_FAILURE_LIMIT = 4

    # When four addresses fail once each
    for _ in range(4):
        assert fail(account.email, new_address(), 1)[0].status_code == 401

    # Then the account is locked out from a fifth, right password or not
    assert_locked(sign_in(account.email, DEFAULT_PASSWORD, new_address()))


def test_every_sign_in_takes_from_the_address_allowance(account, settings):
    # Given an allowance of 3 requests per address to the auth endpoints
    settings.RATELIMIT_AUTH_RATE = (3, 3600)
    address = new_address()

    # When the account signs in successfully four times from one address
    responses = [sign_in(account.email, DEFAULT_PASSWORD, address) for _ in range(4)]

    # Then the fourth is refused, and the headers counted down to it
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r["RateLimit-Remaining"] for r in responses] == ["2", "1", "0", "0"]
    assert_locked(responses[3])


# --- proxies --------------------------------------------------------------------------------


def test_behind_trusted_proxies_the_forwarded_client_is_limited(account, settings):
    # Given one trusted proxy in front of the app, through which two clients come
    settings.TRUSTED_PROXY_COUNT = 1
    settings.LOGIN_FAILURE_LIMIT = 2
    proxy, attacker, user = new_address(), new_address(), new_address()

    # When the attacker locks the pair out
    for _ in range(2):
        response = sign_in(account.email, "nope", proxy, HTTP_X_FORWARDED_FOR=attacker)
        assert response.status_code == 401

    # Then the attacker is locked out and the user, behind the same proxy, is not
    assert_locked(sign_in(account.email, DEFAULT_PASSWORD, proxy, HTTP_X_FORWARDED_FOR=attacker))
    ok = sign_in(account.email, DEFAULT_PASSWORD, proxy, HTTP_X_FORWARDED_FOR=user)
    assert ok.status_code == 200


def test_without_trusted_proxies_a_forged_forwarded_for_changes_nothing(account, settings):
    # Given no trusted proxy, and a client locked out
    settings.TRUSTED_PROXY_COUNT = 0
    settings.LOGIN_FAILURE_LIMIT = 2
    address = new_address()
    fail(account.email, address, 2)

    # When it claims to be someone else in X-Forwarded-For
    response = sign_in(account.email, DEFAULT_PASSWORD, address, HTTP_X_FORWARDED_FOR="1.2.3.4")

    # Then it is still itself, and still locked out
    assert_locked(response)


# --- signup, refresh, password reset ----------------------------------------------------------


def signup(address: str):
    body = {
        "email": f"{uuid.uuid4().hex[:12]}@example.com",
        "password": DEFAULT_PASSWORD,
        "tenant_name": f"Signup {uuid.uuid4().hex[:6]}",
    }
    return APIClient().post(SIGNUP, body, format="json", REMOTE_ADDR=address)


def test_signups_are_limited_per_address(settings):
    settings.RATELIMIT_SIGNUP_RATE = (2, 3600)
    address = new_address()

    responses = [signup(address) for _ in range(3)]

    assert [r.status_code for r in responses] == [201, 201, 429]
    assert_locked(responses[2])
    assert all(name in r for r in responses for name in RATE_HEADERS)
    assert signup(new_address()).status_code == 201


def test_password_resets_are_limited_per_account_and_per_address(account, settings):
    # Given 2 resets an hour per account, and 4 requests per address to the auth endpoints
    settings.RATELIMIT_PASSWORD_RESET_RATE = (2, 3600)
    settings.RATELIMIT_AUTH_RATE = (4, 3600)

    def reset(email: str, address: str):
        return APIClient().post(
            PASSWORD_RESET, {"email": email}, format="json", REMOTE_ADDR=address
        )

    # When one account's reset is asked for three times, from three addresses
    per_account = [reset(account.email, new_address()) for _ in range(3)]
    # and one address asks for five different accounts
    address = new_address()
    per_address = [reset(f"{uuid.uuid4().hex[:12]}@example.com", address) for _ in range(5)]

    # Then the third for the account is refused, though it came from a fresh address, and so is
    # the fifth from the address, though each named a fresh account
    assert [r.status_code for r in per_account] == [202, 202, 429]
    assert_locked(per_account[2])
    assert [r.status_code for r in per_address] == [202, 202, 202, 202, 429]
    assert_locked(per_address[4])


def test_refreshes_are_limited_per_user(account, settings):
    # Given 2 refreshes an hour per user, and a user's token pair
    settings.RATELIMIT_REFRESH_RATE = (2, 3600)
    tokens = sign_in(account.email, DEFAULT_PASSWORD, new_address()).json()

    # When the session is refreshed three times, from different addresses, rotating each time
    statuses = []
    for _ in range(3):
        response = APIClient().post(
            REFRESH, {"refresh": tokens["refresh"]}, format="json", REMOTE_ADDR=new_address()
        )
        statuses.append(response.status_code)
        if response.status_code == 200:
            tokens = response.json()

    # Then the third is refused, though its token is valid
    assert statuses == [200, 200, 429]
    assert_locked(response)


def test_a_forged_refresh_token_counts_against_nobody(account, settings):
    # Given 1 refresh an hour per user, and the user's genuine refresh token
    settings.RATELIMIT_REFRESH_RATE = (1, 3600)
    tokens = sign_in(account.email, DEFAULT_PASSWORD, new_address()).json()
    header, payload, _ = tokens["refresh"].split(".")

    # When someone sends the token with its signature replaced
    forged = APIClient().post(
        REFRESH, {"refresh": f"{header}.{payload}.AAAA"}, format="json", REMOTE_ADDR=new_address()
    )

    # Then it is a 401, and the user's own refresh still has its allowance
    assert_problem(forged, 401, "not-authenticated")
    genuine = APIClient().post(
        REFRESH, {"refresh": tokens["refresh"]}, format="json", REMOTE_ADDR=new_address()
    )
    assert genuine.status_code == 200, genuine.content


# --- the findings of the source review (docs/security.md) -------------------------------------


def test_a_pair_that_signed_in_before_is_not_locked_out_by_strangers(account, settings):
    # Given the owner signed in from home once
    settings.LOGIN_ACCOUNT_FAILURE_LIMIT = 4
    home = new_address()
    assert sign_in(account.email, DEFAULT_PASSWORD, home).status_code == 200

    # When strangers fail against the account from four addresses
    for _ in range(4):
        assert fail(account.email, new_address(), 1)[0].status_code == 401

    # Then the account is locked for every other address, but the owner signs in from home
    assert_locked(sign_in(account.email, DEFAULT_PASSWORD, new_address()))
    assert sign_in(account.email, DEFAULT_PASSWORD, home).status_code == 200
    # ...still held to the pair's own window there
    settings.LOGIN_FAILURE_LIMIT = 2
    fail(account.email, home, 2)
    assert_locked(sign_in(account.email, DEFAULT_PASSWORD, home))


def test_wrong_current_passwords_count_as_failed_sign_ins(account, settings):
    # A finding of the source review: a stolen token could guess the password for ever.
    settings.LOGIN_FAILURE_LIMIT = 3
    address = new_address()
    tokens = sign_in(account.email, DEFAULT_PASSWORD, address).json()
    client = APIClient(REMOTE_ADDR=address)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    change = f"{API}/auth/password/change/"
    body = {"current_password": "a guess", "new_password": "another long passphrase 9"}

    guesses = [client.post(change, body, format="json") for _ in range(3)]
    right = client.post(change, {**body, "current_password": DEFAULT_PASSWORD}, format="json")

    assert [r.status_code for r in guesses] == [400, 400, 400]
    assert_locked(right)
    # The sign-in from that address is locked out too: one window for every password check
    assert_locked(sign_in(account.email, DEFAULT_PASSWORD, address))


def test_signup_says_the_same_whether_the_email_or_the_slug_is_taken(account):
    taken_email = {
        "email": account.email,
        "password": "a long passphrase of mine 7",
        "name": "X",
        "tenant_name": f"Fresh {uuid.uuid4().hex[:8]}",
    }
    taken_slug = {**taken_email, "email": f"{uuid.uuid4().hex[:10]}@example.com"}
    taken_slug["tenant_slug"] = make_tenant().slug

    by_email = APIClient().post(SIGNUP, taken_email, format="json", REMOTE_ADDR=new_address())
    by_slug = APIClient().post(SIGNUP, taken_slug, format="json", REMOTE_ADDR=new_address())

    first, second = assert_problem(by_email, 409), assert_problem(by_slug, 409)
    assert first["detail"] == second["detail"]


def test_signups_are_limited_per_email_too(settings):
    settings.RATELIMIT_SIGNUP_ACCOUNT_RATE = (2, 3600)
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    body = {"email": email, "password": "short", "name": "X", "tenant_name": "T"}

    # From a new address each time: the per-address bucket never runs out
    responses = [
        APIClient().post(SIGNUP, body, format="json", REMOTE_ADDR=new_address()) for _ in range(3)
    ]

    assert [r.status_code for r in responses[:2]] == [400, 400]
    assert_problem(responses[2], 429, "rate-limited")
