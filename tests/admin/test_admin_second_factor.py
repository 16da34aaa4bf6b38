"""The admin's sign-in asks an operator with a second factor for its code with the password: the
password alone signs them in no longer, and a wrong code is a failed sign-in."""

import re
import time
import uuid

import pyotp
import pytest
from django.test import Client

from accounts.mfa import services as mfa
from kernel.tenancy.models import PlatformAuditEvent
from tests.factories import DEFAULT_PASSWORD, make_user

pytestmark = pytest.mark.django_db

SETUP = "/admin/second-factor/"
SECOND_FACTOR_NEEDED = "Enter the current code of your authenticator app, or a recovery code."


def operator_with_a_second_factor():
    """An operator whose TOTP is set up (through the service: operators set it up in the admin,
    which is the next step of this work)."""
    operator = make_user(
        email=f"ops-{uuid.uuid4().hex[:8]}@example.com", is_staff=True, is_superuser=True
    )
    totp = pyotp.TOTP(mfa.totp_begin(user=operator)["secret"])
    recovery_codes = mfa.totp_confirm(user=operator, code=totp.now())
    return operator, totp, recovery_codes


def sign_in(client: Client, email: str, *, code: str | None = None):
    data = {"username": email, "password": DEFAULT_PASSWORD, "next": "/admin/"}
    if code is not None:
        data["code"] = code
    return client.post("/admin/login/", data)


def test_the_password_alone_does_not_sign_in_an_operator_with_a_second_factor():
    operator, _, _ = operator_with_a_second_factor()
    client = Client()

    response = sign_in(client, operator.email)

    assert response.status_code == 200
    assert SECOND_FACTOR_NEEDED in response.content.decode()
    assert client.get("/admin/").status_code == 302  # still sent to the sign-in page
    # An operator belongs to no tenant: setting the factor up is in the platform's log
    assert PlatformAuditEvent.objects.filter(
        action="accounts.user.mfa_enabled", target_id=str(operator.pk)
    ).exists()


def test_the_password_and_the_code_sign_in(settings):
    operator, totp, _ = operator_with_a_second_factor()
    client = Client()

    response = sign_in(client, operator.email, code=totp.at(time.time() + 30))

    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_a_recovery_code_signs_in_once():
    operator, _, recovery_codes = operator_with_a_second_factor()

    assert sign_in(Client(), operator.email, code=recovery_codes[0]).status_code == 302
    again = sign_in(Client(), operator.email, code=recovery_codes[0])

    assert again.status_code == 200
    assert SECOND_FACTOR_NEEDED in again.content.decode()


def test_wrong_codes_count_toward_the_lockout(settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    settings.MFA_THROTTLE_FACTOR = 0  # the lockout, not django-otp's throttling, is tested here
    operator, totp, _ = operator_with_a_second_factor()
    client = Client(REMOTE_ADDR="10.250.1.1")

    wrong = [sign_in(client, operator.email, code="000000") for _ in range(3)]
    right = sign_in(client, operator.email, code=totp.at(time.time() + 30))

    assert [response.status_code for response in wrong] == [200, 200, 200]
    assert right.status_code == 429


def test_the_page_offers_the_code_field_and_an_operator_without_a_factor_needs_none():
    page = Client().get("/admin/login/").content.decode()
    assert 'name="code"' in page
    assert 'autocomplete="one-time-code"' in page

    operator = make_user(
        email=f"ops-{uuid.uuid4().hex[:8]}@example.com", is_staff=True, is_superuser=True
    )
    assert sign_in(Client(), operator.email).status_code == 302


def test_with_admin_require_mfa_an_operator_sets_a_second_factor_up_before_anything_else(
    settings,
):
    settings.ADMIN_REQUIRE_MFA = True
    operator = make_user(
        email=f"ops-{uuid.uuid4().hex[:8]}@example.com", is_staff=True, is_superuser=True
    )
    client = Client()

    assert sign_in(client, operator.email).status_code == 302
    # Every page of the admin sends them to set it up first
    for page in ("/admin/", "/admin/tenants/tenant/", "/admin/accounts/user/"):
        response = client.get(page)
        assert response.status_code == 302, page
        assert response["Location"] == SETUP
    setup = client.get(SETUP)
    assert setup.status_code == 200
    assert "<svg" in setup.content.decode()
    secret = re.search(r'id="secret">([A-Z2-7]{32})<', setup.content.decode()).group(1)
    # Reloading the page (or a wrong code) keeps the secret the app has already taken
    assert secret in client.get(SETUP).content.decode()
    wrong = client.post(SETUP, {"code": "000000"})
    assert wrong.status_code == 200
    assert "The code is not valid" in wrong.content.decode()
    assert secret in wrong.content.decode()

    done = client.post(SETUP, {"code": pyotp.TOTP(secret).now()})

    assert done.status_code == 200
    shown = re.findall(r"<li><code>([A-Z2-7]{5}-[A-Z2-7]{5})</code></li>", done.content.decode())
    assert len(set(shown)) == 10
    assert client.get("/admin/").status_code == 200
    # From now on the password alone does not sign them in
    assert sign_in(Client(), operator.email).status_code == 200


def test_without_admin_require_mfa_an_operator_without_one_uses_the_admin(settings):
    settings.ADMIN_REQUIRE_MFA = False
    operator = make_user(
        email=f"ops-{uuid.uuid4().hex[:8]}@example.com", is_staff=True, is_superuser=True
    )
    client = Client()

    assert sign_in(client, operator.email).status_code == 302
    assert client.get("/admin/").status_code == 200
