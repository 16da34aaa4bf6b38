"""The second factor, TOTP, through HTTP: enrolment, confirmation, removal, recovery codes, and
the sign-in that asks for a code once the password is right.

Codes are computed independently of the application, with pyotp, from the secret the API
returned, as an authenticator app does (tests/accounts/mfa_helpers.py). Every test signs in from
addresses of its own, since Redis keeps the sign-in failure windows from one test to the next.
"""

import base64
import json
import re
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
from cryptography.fernet import Fernet
from django.core import mail
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from accounts.mfa import services
from accounts.models import RecoveryCode, TotpDevice
from kernel.permissions import Perm
from kernel.tenancy.models import PlatformAuditEvent
from tests.factories import make_member, make_tenant
from tests.helpers import (
    API,
    ME,
    assert_problem,
    client_for,
    error_fields,
    outcome,
    owner_of,
    tasks_run_inline,
)
from tests.kernel.test_quotas import Rendezvous, race
from tests.oauth.conftest import registration, wsgi_transport  # noqa: F401 (a fixture)
from tests.oauth.flow import in_process

from .mfa_helpers import (
    CONFIRM,
    MFA,
    RECOVERY_CODES,
    TOTP,
    Authenticator,
    activate,
    away_from_a_step_boundary,
    bearer_client,
    code_step,
    confirm,
    enroll,
    mfa_status,
    mfa_token_of,
    new_address,
    password_step,
)

pytestmark = [pytest.mark.django_db, pytest.mark.tenant(plan_code="pro")]

AUDIT_EVENTS = f"{API}/audit-events/"
SECRET_PATTERN = re.compile(r"[A-Z2-7]{32}")
RECOVERY_CODE_PATTERN = re.compile(r"[A-Z2-7]{5}-[A-Z2-7]{5}")


@pytest.fixture(autouse=True)
def _no_device_throttling(settings) -> None:
    # django-otp's throttling (a wait after each wrong code) is a separate defence: here a right
    # code sent right after a wrong one must be judged on the code alone.
    settings.MFA_THROTTLE_FACTOR = 0


@pytest.fixture
def person(tenant):
    """The tenant's owner: the person whose second factor the tests set up."""
    return owner_of(tenant)


@pytest.fixture
def person_client(person, tenant) -> APIClient:
    """`person` signed in (before any second factor), with their own access token."""
    return client_for(person, tenant)


def audit_actions(reader: APIClient, user) -> list[str]:
    """The accounts.user.* actions of `user` in the reader's tenant's log, oldest first."""
    response = reader.get(AUDIT_EVENTS, {"action": "accounts.user.*", "page_size": 100})
    assert response.status_code == 200, response.content
    events = [e for e in response.json()["results"] if e["actor_id"] == str(user.pk)]
    return [event["action"] for event in reversed(events)]


def every_event_as_text(reader: APIClient) -> str:
    """The reader's tenant's whole log as the API shows it, and the platform's log as stored."""
    response = reader.get(AUDIT_EVENTS, {"page_size": 100})
    assert response.status_code == 200, response.content
    with outcome():
        platform = list(PlatformAuditEvent.objects.values())
    return response.content.decode() + json.dumps(platform, default=str)


# --- who may -----------------------------------------------------------------------------------

ENDPOINTS = [
    ("get", MFA, None),
    ("post", TOTP, None),
    ("post", CONFIRM, {"code": "123456"}),
    ("delete", TOTP, {"code": "123456"}),
    ("post", RECOVERY_CODES, {"code": "123456"}),
]


@pytest.mark.parametrize(("method", "url", "body"), ENDPOINTS)
def test_an_api_key_gets_a_403_on_every_mfa_endpoint(person_client, method, url, body):
    # Given an API key holding every permission
    created = person_client.post(
        f"{API}/api-keys/", {"name": "ci", "permissions": sorted(Perm)}, format="json"
    )
    assert created.status_code == 201, created.content
    key = APIClient()
    key.credentials(HTTP_AUTHORIZATION=f"Api-Key {created.json()['key']}")

    # Then it is nobody's account: 403
    assert_problem(getattr(key, method)(url, body, format="json"), 403, "permission-denied")
    assert mfa_status(person_client)["totp"] is False


@pytest.mark.parametrize(("method", "url", "body"), ENDPOINTS)
def test_an_oauth_token_gets_a_403_on_every_mfa_endpoint(
    tenant,
    person,
    person_client,
    wsgi_transport,  # noqa: F811 (the imported fixture)
    method,
    url,
    body,
):
    # Given an app the person granted every scope it asked for
    scopes = ["catalog.read", "openid", "profile"]
    _, app = registration(person_client, scopes=scopes)
    tokens = in_process(app, wsgi_transport).tokens(email=person.email, scope=" ".join(scopes))
    token = bearer_client(tokens["access_token"])

    # Then the app's token is not the person: 403, and nothing is enrolled
    assert_problem(getattr(token, method)(url, body, format="json"), 403, "permission-denied")
    assert mfa_status(person_client)["totp"] is False


@pytest.mark.parametrize(("method", "url", "body"), ENDPOINTS)
def test_without_credentials_every_mfa_endpoint_is_a_401(method, url, body):
    response = getattr(APIClient(), method)(url, body, format="json")

    assert_problem(response, 401, "not-authenticated")


# --- enrolment ---------------------------------------------------------------------------------


def test_a_person_without_a_second_factor_sees_it_off(person_client):
    assert mfa_status(person_client) == {"totp": False, "recovery_codes_remaining": 0}


def test_enrolling_gives_the_secret_and_its_url_but_activates_nothing(
    tenant, person, person_client, settings
):
    # When the person enrols
    response = person_client.post(TOTP, format="json")

    # Then a base32 secret, and the URL an authenticator app reads from a QR code
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"secret", "otpauth_url"}
    secret = body["secret"]
    assert SECRET_PATTERN.fullmatch(secret), secret
    url = urlsplit(body["otpauth_url"])
    assert (url.scheme, url.netloc) == ("otpauth", "totp")
    assert unquote(url.path) == f"/{settings.MFA_ISSUER}:{person.email}"
    # The label's separator is a literal colon: apps that split the label on it (pyotp does)
    # read an encoded one (%3A) as part of the account's name
    assert url.path.startswith(f"/{settings.MFA_ISSUER}:"), url.path
    query = parse_qs(url.query)
    assert query == {
        "secret": [secret],
        "issuer": [settings.MFA_ISSUER],
        "algorithm": ["SHA1"],
        "digits": ["6"],
        "period": ["30"],
    }
    # ...which an app (pyotp's own parser here) reads as the same generator
    parsed = pyotp.parse_uri(body["otpauth_url"])
    assert (parsed.secret, parsed.digits, parsed.interval) == (secret, 6, 30)
    assert parsed.name == person.email
    assert parsed.issuer == settings.MFA_ISSUER

    # And nothing is active until a code confirms it: the status says so, sign-in gives tokens
    assert mfa_status(person_client) == {"totp": False, "recovery_codes_remaining": 0}
    signed_in = password_step(person, tenant=tenant)
    assert signed_in.status_code == 200, signed_in.content
    assert {"access", "refresh"} <= set(signed_in.json())


def test_enrolling_again_before_confirming_replaces_the_secret(person_client):
    # Given a first enrolment, then a second one before any confirmation
    first = Authenticator(enroll(person_client)["secret"])
    second = Authenticator(enroll(person_client)["secret"])
    assert first.secret != second.secret

    # Then the first secret's code no longer confirms, and the second's does
    assert error_fields(confirm(person_client, first.fresh_code())) == {"code"}
    assert mfa_status(person_client)["totp"] is False
    assert confirm(person_client, second.fresh_code()).status_code == 200
    assert mfa_status(person_client)["totp"] is True


def test_enrolling_while_active_is_a_conflict_and_keeps_the_device(tenant, person, person_client):
    # Given TOTP active
    app, _ = activate(person_client)

    # When the person enrols again
    response = person_client.post(TOTP, format="json")

    # Then 409, and the device in use still works
    assert_problem(response, 409, "conflict")
    assert "secret" not in response.json()
    assert mfa_status(person_client)["totp"] is True
    signed_in = code_step(mfa_token_of(person, tenant=tenant), app.fresh_code())
    assert signed_in.status_code == 200, signed_in.content


# --- confirmation ------------------------------------------------------------------------------


def test_confirming_activates_totp_and_gives_ten_recovery_codes(person_client):
    # Given an enrolment
    app = Authenticator(enroll(person_client)["secret"])

    # When the person confirms with the code the app shows
    response = confirm(person_client, app.fresh_code())

    # Then TOTP is active, with ten distinct recovery codes, shown this once
    assert response.status_code == 200, response.content
    assert set(response.json()) == {"recovery_codes"}
    codes = response.json()["recovery_codes"]
    assert len(codes) == 10
    assert len(set(codes)) == 10
    assert all(RECOVERY_CODE_PATTERN.fullmatch(code) for code in codes), codes
    status = person_client.get(MFA)
    assert status.json() == {"totp": True, "recovery_codes_remaining": 10}
    assert app.secret not in status.content.decode()


@pytest.mark.parametrize(
    "code",
    ["wrong", "", None, "12345", "1234567", "abcdef", "12 345", "9" * 10_000, 123456, ["123456"]],
)
def test_a_wrong_code_confirms_nothing(person_client, code):
    # Given an enrolment
    app = Authenticator(enroll(person_client)["secret"])
    sent = app.wrong_code() if code == "wrong" else code

    # When the person sends a code that is not the app's
    response = person_client.post(CONFIRM, {"code": sent}, format="json")

    # Then 400 on the code, nothing active, and the right code still confirms
    assert error_fields(response) == {"code"}
    assert mfa_status(person_client)["totp"] is False
    assert confirm(person_client, app.fresh_code()).status_code == 200


def test_a_missing_code_is_a_field_error(person_client):
    enroll(person_client)

    assert error_fields(person_client.post(CONFIRM, {}, format="json")) == {"code"}
    assert mfa_status(person_client)["totp"] is False


def test_confirming_with_nothing_pending_is_a_conflict(person_client):
    # Nothing enrolled
    assert_problem(confirm(person_client, "123456"), 409, "conflict")

    # Nor once the enrolment is confirmed: nothing is pending any more
    app, _ = activate(person_client)
    assert_problem(confirm(person_client, app.fresh_code()), 409, "conflict")
    assert mfa_status(person_client) == {"totp": True, "recovery_codes_remaining": 10}


@pytest.mark.parametrize("offset", [-30, 0, 30])
def test_a_clock_one_step_off_is_accepted(person_client, offset):
    app = Authenticator(enroll(person_client)["secret"])
    away_from_a_step_boundary()

    response = confirm(person_client, app.at(offset))

    assert response.status_code == 200, response.content
    assert mfa_status(person_client)["totp"] is True


@pytest.mark.parametrize("offset", [-90, 90])
def test_a_clock_three_steps_off_is_refused(person_client, offset):
    app = Authenticator(enroll(person_client)["secret"])
    away_from_a_step_boundary()
    assert app.at(offset) not in {app.at(-30), app.at(0), app.at(30)}  # not one by chance

    response = confirm(person_client, app.at(offset))

    assert error_fields(response) == {"code"}
    assert mfa_status(person_client)["totp"] is False


def test_the_drift_allowed_does_not_walk_away_from_the_servers_clock(person_client):
    # Given a device confirmed with a code one step ahead, then a code two steps ahead sent
    # (whatever the answer to it)
    app = Authenticator(enroll(person_client)["secret"])
    away_from_a_step_boundary()
    assert confirm(person_client, app.at(30)).status_code == 200
    person_client.post(RECOVERY_CODES, {"code": app.at(60)}, format="json")

    # When a code three steps ahead is sent
    response = person_client.delete(TOTP, {"code": app.at(90)}, format="json")

    # Then it is refused: 90 s off is beyond the one step allowed, however the codes came
    assert error_fields(response) == {"code"}
    assert mfa_status(person_client)["totp"] is True


def test_a_code_is_accepted_once(person_client):
    # Given TOTP confirmed with a code
    app = Authenticator(enroll(person_client)["secret"])
    code = app.fresh_code()
    assert confirm(person_client, code).status_code == 200

    # When the same code is sent again at once, to remove the device
    replayed = person_client.delete(TOTP, {"code": code}, format="json")

    # Then it is refused, and TOTP stays on
    assert error_fields(replayed) == {"code"}
    assert mfa_status(person_client)["totp"] is True


# --- removal -----------------------------------------------------------------------------------


def test_removing_totp_with_a_code_turns_it_off_and_tells_the_person(
    tenant, person, person_client, django_capture_on_commit_callbacks
):
    # Given TOTP active
    app, codes = activate(person_client)
    mail.outbox.clear()

    # When the person removes it with a current code
    with tasks_run_inline(), django_capture_on_commit_callbacks(execute=True):
        response = person_client.delete(TOTP, {"code": app.fresh_code()}, format="json")

    # Then it is off, the recovery codes are gone, and sign-in asks for no code
    assert response.status_code == 204, response.content
    assert mfa_status(person_client) == {"totp": False, "recovery_codes_remaining": 0}
    signed_in = password_step(person, tenant=tenant)
    assert signed_in.status_code == 200, signed_in.content
    # ...and the person is told, by one email that carries no code
    (message,) = mail.outbox
    assert message.to == [person.email]
    assert not any(code in message.body for code in codes)


def test_removing_totp_with_a_recovery_code(person_client):
    _, codes = activate(person_client)

    response = person_client.delete(TOTP, {"code": codes[3]}, format="json")

    assert response.status_code == 204, response.content
    assert mfa_status(person_client) == {"totp": False, "recovery_codes_remaining": 0}


def test_the_recovery_codes_of_a_removed_device_are_worth_nothing(tenant, person, person_client):
    # Given TOTP removed, then enrolled and confirmed again
    _, old_codes = activate(person_client)
    assert person_client.delete(TOTP, {"code": old_codes[0]}, format="json").status_code == 204
    _, new_codes = activate(person_client)

    # Then the first device's recovery codes sign nobody in, and the new ones do
    assert set(old_codes).isdisjoint(new_codes)
    refused = code_step(mfa_token_of(person, tenant=tenant), old_codes[1])
    assert_problem(refused, 401, "not-authenticated")
    assert code_step(mfa_token_of(person, tenant=tenant), new_codes[0]).status_code == 200


@pytest.mark.parametrize("kind", ["wrong TOTP", "unknown recovery code"])
def test_a_wrong_code_removes_nothing(person_client, kind):
    # Given TOTP active
    app, codes = activate(person_client)
    unknown = next(c for c in ("AAAAA-AAAAA", "BBBBB-BBBBB") if c not in codes)
    sent = app.wrong_code() if kind == "wrong TOTP" else unknown

    # When the person tries to remove TOTP with a code that is neither
    response = person_client.delete(TOTP, {"code": sent}, format="json")

    # Then 400 on the code, and TOTP stays on with all its recovery codes
    assert error_fields(response) == {"code"}
    assert mfa_status(person_client) == {"totp": True, "recovery_codes_remaining": 10}


def test_a_spent_recovery_code_removes_nothing(tenant, person, person_client):
    # Given a recovery code spent signing in
    _, codes = activate(person_client)
    assert code_step(mfa_token_of(person, tenant=tenant), codes[0]).status_code == 200

    # Then it cannot remove TOTP
    assert error_fields(person_client.delete(TOTP, {"code": codes[0]}, format="json")) == {"code"}
    assert mfa_status(person_client) == {"totp": True, "recovery_codes_remaining": 9}


def test_removing_totp_when_it_is_off_is_a_conflict(person_client):
    assert_problem(person_client.delete(TOTP, {"code": "123456"}, format="json"), 409, "conflict")

    # Nor is a pending enrolment something to remove with its code
    app = Authenticator(enroll(person_client)["secret"])
    pending = person_client.delete(TOTP, {"code": app.fresh_code()}, format="json")
    assert_problem(pending, 409, "conflict")


# --- recovery codes ----------------------------------------------------------------------------


@pytest.mark.parametrize("with_", ["TOTP code", "recovery code"])
def test_regenerating_gives_a_fresh_set_and_the_old_one_stops_working(
    tenant, person, person_client, with_
):
    # Given TOTP active with its first ten codes
    app, old_codes = activate(person_client)
    proof = app.fresh_code() if with_ == "TOTP code" else old_codes[9]

    # When the person asks for a fresh set
    response = person_client.post(RECOVERY_CODES, {"code": proof}, format="json")

    # Then ten new codes, none of the old ones
    assert response.status_code == 200, response.content
    assert set(response.json()) == {"recovery_codes"}
    new_codes = response.json()["recovery_codes"]
    assert len(set(new_codes)) == 10
    assert all(RECOVERY_CODE_PATTERN.fullmatch(code) for code in new_codes), new_codes
    assert set(new_codes).isdisjoint(old_codes)
    assert mfa_status(person_client) == {"totp": True, "recovery_codes_remaining": 10}
    # ...an old one signs nobody in any more, a new one does
    refused = code_step(mfa_token_of(person, tenant=tenant), old_codes[0])
    assert_problem(refused, 401, "not-authenticated")
    assert code_step(mfa_token_of(person, tenant=tenant), new_codes[0]).status_code == 200


def test_regenerating_with_a_wrong_code_changes_nothing(tenant, person, person_client):
    app, codes = activate(person_client)

    response = person_client.post(RECOVERY_CODES, {"code": app.wrong_code()}, format="json")

    assert error_fields(response) == {"code"}
    assert mfa_status(person_client) == {"totp": True, "recovery_codes_remaining": 10}
    assert code_step(mfa_token_of(person, tenant=tenant), codes[0]).status_code == 200


# --- sign-in -----------------------------------------------------------------------------------


def test_the_right_password_asks_for_the_code_then_the_code_gives_the_tokens(
    tenant, person, person_client
):
    # Given TOTP active
    app, _ = activate(person_client)

    # When the person signs in with the right password
    response = password_step(person, tenant=tenant)

    # Then no token yet: a 401 mfa-required with the mfa_token
    body = assert_problem(response, 401, "mfa-required")
    assert isinstance(body["mfa_token"], str)
    assert body["mfa_token"]
    assert not {"access", "refresh"} & set(body)

    # When the code follows with the mfa_token
    tokens = code_step(body["mfa_token"], app.fresh_code())

    # Then the tokens, whose access token is the person's, in the tenant they signed in to
    assert tokens.status_code == 200, tokens.content
    assert {"access", "refresh"} <= set(tokens.json())
    me = bearer_client(tokens.json()["access"]).get(ME)
    assert me.status_code == 200, me.content
    assert me.json()["user"]["email"] == person.email
    assert me.json()["tenant"]["slug"] == tenant.slug


def test_the_tenant_asked_for_at_sign_in_is_the_one_signed_in_to(tenant, person, person_client):
    # Given a person of two tenants, with TOTP active
    other = make_tenant()
    make_member(other, roles=["viewer"], user=person)
    app, _ = activate(person_client)

    # When they sign in to the second with their password, then their code
    tokens = code_step(mfa_token_of(person, tenant=other), app.fresh_code())

    # Then their tokens are for the second tenant
    assert tokens.status_code == 200, tokens.content
    me = bearer_client(tokens.json()["access"]).get(ME)
    assert me.json()["tenant"]["slug"] == other.slug


def test_an_mfa_token_is_single_use(tenant, person, person_client):
    app, codes = activate(person_client)
    mfa_token = mfa_token_of(person, tenant=tenant)
    assert code_step(mfa_token, app.fresh_code()).status_code == 200

    # The same mfa_token again, with a right code (a recovery code: unused, valid)
    again = code_step(mfa_token, codes[0])

    assert_problem(again, 401, "not-authenticated")
    assert mfa_status(person_client)["recovery_codes_remaining"] == 10


def test_a_garbage_or_tampered_mfa_token_is_a_401(tenant, person, person_client):
    _, codes = activate(person_client)
    genuine = mfa_token_of(person, tenant=tenant)
    middle = len(genuine) // 2
    flipped = genuine[:middle] + ("A" if genuine[middle] != "A" else "B") + genuine[middle + 1 :]

    for forged in ["garbage", flipped, genuine + "x", genuine[:-4], "é" * 40, "0" * 100]:
        response = code_step(forged, codes[0])
        assert_problem(response, 401, "not-authenticated")

    # None of them spent the recovery code, nor the genuine token
    assert mfa_status(person_client)["recovery_codes_remaining"] == 10
    assert code_step(genuine, codes[0]).status_code == 200


def test_another_persons_code_does_not_complete_a_sign_in(tenant, person, person_client):
    # Given two people with TOTP active
    _, codes = activate(person_client)
    someone = make_member(tenant, roles=["viewer"]).user
    their_app, their_codes = activate(client_for(someone, tenant))

    # When the person's sign-in is completed with the other's codes
    mfa_token = mfa_token_of(person, tenant=tenant)
    by_totp = code_step(mfa_token, their_app.fresh_code())
    by_recovery = code_step(mfa_token, their_codes[0])

    # Then both are refused
    assert_problem(by_totp, 401, "not-authenticated")
    assert_problem(by_recovery, 401, "not-authenticated")
    assert code_step(mfa_token, codes[0]).status_code == 200


def test_a_recovery_code_signs_in_once_and_is_told_and_audited(
    tenant, person, person_client, admin_client, django_capture_on_commit_callbacks
):
    # Given TOTP active
    _, codes = activate(person_client)
    mfa_token = mfa_token_of(person, tenant=tenant)
    mail.outbox.clear()

    # When the person signs in with a recovery code
    with tasks_run_inline(), django_capture_on_commit_callbacks(execute=True):
        response = code_step(mfa_token, codes[4])

    # Then they are in, with one code fewer
    assert response.status_code == 200, response.content
    assert bearer_client(response.json()["access"]).get(ME).status_code == 200
    assert mfa_status(person_client)["recovery_codes_remaining"] == 9
    # ...they are told by one email, which does not carry the code
    (message,) = mail.outbox
    assert message.to == [person.email]
    assert codes[4] not in message.body
    # ...it is in the log
    assert "accounts.user.recovery_code_used" in audit_actions(admin_client, person)
    # ...and the same code does not sign in again
    again = code_step(mfa_token_of(person, tenant=tenant), codes[4])
    assert_problem(again, 401, "not-authenticated")
    assert mfa_status(person_client)["recovery_codes_remaining"] == 9


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["TOTP code", "recovery code"])
def test_two_sign_ins_racing_with_one_code_let_one_in(
    tenant, person, person_client, monkeypatch, kind
):
    # Given two sign-ins waiting for their code, and code checks that meet if they can (if the
    # device is not locked while a code is checked, both see the code unused)
    app, codes = activate(person_client)
    code = app.fresh_code() if kind == "TOTP code" else codes[0]
    mfa_tokens = [mfa_token_of(person, tenant=tenant) for _ in range(2)]
    monkeypatch.setattr(services, "totp_matches", Rendezvous(services.totp_matches))

    # When both send the same code at the same moment, each over its own connection
    responses = race(*(lambda token=token: code_step(token, code) for token in mfa_tokens))

    # Then one is signed in, and the other refused
    assert sorted(r.status_code for r in responses) == [200, 401], responses


def test_a_wrong_password_says_nothing_of_the_second_factor(tenant, person, person_client):
    # Given one person with TOTP active and one without
    activate(person_client)
    plain = make_member(tenant, roles=["viewer"]).user

    # When each signs in with a wrong password
    with_mfa = password_step(person, tenant=tenant, password="not the password")
    without = password_step(plain, tenant=tenant, password="not the password")

    # Then the same 401 (but for the request's own id), without an mfa_token
    first = assert_problem(with_mfa, 401, "not-authenticated")
    second = assert_problem(without, 401, "not-authenticated")
    first.pop("request_id", None)
    second.pop("request_id", None)
    assert first == second
    assert "mfa_token" not in first
    assert "mfa" not in with_mfa.content.decode().lower()


def test_wrong_codes_count_toward_the_sign_in_lockout(tenant, person, person_client, settings):
    # Given a lockout after 3 failures, and a sign-in waiting for its code from one address
    settings.LOGIN_FAILURE_LIMIT = 3
    app, codes = activate(person_client)
    address = new_address()
    mfa_token = mfa_token_of(person, tenant=tenant, address=address)

    # When three wrong codes are sent from that address
    wrong = [code_step(mfa_token, app.wrong_code(), address=address) for _ in range(3)]

    # Then each is a 401, and after them the right code is refused too, as is the password
    for response in wrong:
        assert_problem(response, 401, "not-authenticated")
    locked = code_step(mfa_token, app.fresh_code(), address=address)
    assert_problem(locked, 429, "rate-limited")
    assert int(locked["Retry-After"]) >= 1
    assert_problem(password_step(person, tenant=tenant, address=address), 429, "rate-limited")
    # ...and no recovery code passes the lockout either
    assert_problem(code_step(mfa_token, codes[0], address=address), 429, "rate-limited")
    assert mfa_status(person_client)["recovery_codes_remaining"] == 10


# --- the audit log -----------------------------------------------------------------------------


def test_each_change_is_audited_without_a_secret_or_a_code(
    tenant, person, person_client, admin_client
):
    # Given the person enrols, confirms, regenerates the codes, signs in with one, and removes
    # the device
    secret = enroll(person_client)["secret"]
    app = Authenticator(secret)
    confirm_code = app.fresh_code()
    first_codes = confirm(person_client, confirm_code).json()["recovery_codes"]
    regenerate_code = app.fresh_code()
    response = person_client.post(RECOVERY_CODES, {"code": regenerate_code}, format="json")
    second_codes = response.json()["recovery_codes"]
    mfa_token = mfa_token_of(person, tenant=tenant)
    assert code_step(mfa_token, second_codes[0]).status_code == 200
    removed = person_client.delete(TOTP, {"code": second_codes[1]}, format="json")
    assert removed.status_code == 204, removed.content

    # Then the log has one event for each, by the person
    assert audit_actions(admin_client, person) == [
        "accounts.user.mfa_enabled",
        "accounts.user.recovery_codes_regenerated",
        "accounts.user.recovery_code_used",
        "accounts.user.mfa_disabled",
    ]
    # ...and no secret, code or mfa_token anywhere in any log
    text = every_event_as_text(admin_client)
    raw = base64.b32decode(secret)
    for sensitive in [
        secret,
        secret.lower(),
        raw.hex(),
        base64.b64encode(raw).decode(),
        confirm_code,
        regenerate_code,
        mfa_token,
        *first_codes,
        *second_codes,
    ]:
        assert sensitive not in text, sensitive


# --- at rest -----------------------------------------------------------------------------------


def stored_rows(model) -> list[tuple]:
    with outcome(), connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {connection.ops.quote_name(model._meta.db_table)}")  # noqa: S608
        return cursor.fetchall()


def test_the_secret_is_encrypted_at_rest_and_recovery_codes_are_not_stored(person_client):
    # Given a device confirmed
    secret = enroll(person_client)["secret"]
    codes = confirm(person_client, Authenticator(secret).fresh_code()).json()["recovery_codes"]

    # Then no column of the device table holds the secret, in base32, hex or base64
    raw = base64.b32decode(secret)
    forms = [secret, secret.lower(), raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode()]
    devices = stored_rows(TotpDevice)
    assert devices, "the device is stored"
    stored = " ".join(
        value.hex() if isinstance(value, bytes | memoryview) else str(value)
        for row in devices
        for value in row
    )
    assert not any(form in stored for form in forms)
    # ...nor any column of the recovery code table a code, with or without its dash
    kept = " ".join(str(value) for row in stored_rows(RecoveryCode) for value in row)
    assert len(stored_rows(RecoveryCode)) >= 10
    assert not any(c in kept or c.replace("-", "") in kept for c in codes)


def test_codes_still_verify_after_the_key_is_rotated(tenant, person, person_client, settings):
    # Given a device enrolled under key A
    key_a, key_b = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.MFA_ENCRYPTION_KEYS = [key_a]
    app, codes = activate(person_client)

    # When key B is put first and the secrets are re-encrypted, then key A is dropped
    settings.MFA_ENCRYPTION_KEYS = [key_b, key_a]
    call_command("rotate_mfa_keys")
    settings.MFA_ENCRYPTION_KEYS = [key_b]

    # Then the app's codes still sign the person in, and remove the device
    tokens = code_step(mfa_token_of(person, tenant=tenant), app.fresh_code())
    assert tokens.status_code == 200, tokens.content
    removed = person_client.delete(TOTP, {"code": codes[0]}, format="json")
    assert removed.status_code == 204, removed.content


def test_rotating_re_encrypts_each_secret_with_the_newest_key(person, person_client, settings):
    # What made the test above pass: the stored secret is now key B's ciphertext alone.
    key_a, key_b = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.MFA_ENCRYPTION_KEYS = [key_a]
    app = Authenticator(enroll(person_client)["secret"])
    assert confirm(person_client, app.fresh_code()).status_code == 200
    settings.MFA_ENCRYPTION_KEYS = [key_b, key_a]
    with outcome():
        before = {row.pk: row.encrypted_key for row in TotpDevice.objects.filter(user=person)}

    call_command("rotate_mfa_keys")

    with outcome():
        after = {row.pk: row.encrypted_key for row in TotpDevice.objects.filter(user=person)}
    (device_id,) = before
    assert after[device_id] != before[device_id]
    assert base64.b32encode(Fernet(key_b).decrypt(after[device_id].encode())).decode() == (
        app.secret
    )
