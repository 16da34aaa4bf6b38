"""The authorization server's sign-in page asks a person with a second factor for its code after
their password, as the API's sign-in does: the password alone signs nobody in, a wrong code is a
failed sign-in (the same lockouts), a recovery code works once, and the page sends the person on
to where the authorization page was taking them."""

import time

import pyotp
import pytest

from tests.factories import DEFAULT_PASSWORD, make_tenant
from tests.helpers import client_for, owner_of
from tests.oauth.test_sign_in_page import (
    AUTHORIZE_NEXT,
    alerts_of,
    fill_in,
    new_email,
    sign_in,
    signed_in,
)

pytestmark = pytest.mark.django_db

CODE_PAGE = "/oauth/sign-in/code/"


def person_with_a_second_factor() -> tuple[object, pyotp.TOTP, list[str]]:
    """A tenant's owner with TOTP set up through the API: them, their TOTP, recovery codes."""
    tenant = make_tenant(owner=None)
    owner = owner_of(tenant)
    owner.email = new_email()
    owner.save(update_fields=["email"])
    api = client_for(owner, tenant)
    secret = api.post("/api/v1/auth/mfa/totp/").json()["secret"]
    totp = pyotp.TOTP(secret)
    confirmed = api.post("/api/v1/auth/mfa/totp/confirm/", {"code": totp.now()}, format="json")
    assert confirmed.status_code == 200, confirmed.content
    return owner, totp, confirmed.json()["recovery_codes"]


def give_code(visitor, code: str):
    return fill_in(visitor, CODE_PAGE, AUTHORIZE_NEXT, code=code)


def test_the_right_password_leads_to_the_code_page_and_only_the_code_signs_in(visitor):
    person, totp, _ = person_with_a_second_factor()

    after_password = sign_in(visitor, person.email, DEFAULT_PASSWORD)

    assert after_password.status_code == 302
    assert after_password.headers["location"].startswith(CODE_PAGE)
    assert not signed_in(visitor)
    # The next step's code: the one of this step confirmed the set-up, and is spent.
    after_code = give_code(visitor, totp.at(time.time() + 30))
    assert after_code.status_code == 302
    assert after_code.headers["location"] == AUTHORIZE_NEXT
    assert signed_in(visitor)


def test_a_wrong_code_is_refused_and_counts_toward_the_lockout(visitor, settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    settings.MFA_THROTTLE_FACTOR = 0  # the lockout, not django-otp's throttling, is tested here
    person, totp, _ = person_with_a_second_factor()
    sign_in(visitor, person.email, DEFAULT_PASSWORD)

    wrong = [give_code(visitor, "000000") for _ in range(3)]

    assert [response.status_code for response in wrong] == [200] * 3
    assert alerts_of(wrong[0]) == ["The code is not valid."]
    locked = give_code(visitor, totp.at(time.time() + 30))
    assert locked.status_code == 429
    assert not signed_in(visitor)


def test_a_recovery_code_signs_in_once(visitor, wsgi_transport):
    person, _, recovery_codes = person_with_a_second_factor()
    sign_in(visitor, person.email, DEFAULT_PASSWORD)
    assert give_code(visitor, recovery_codes[0].lower()).status_code == 302
    assert signed_in(visitor)

    visitor.cookies.clear()
    sign_in(visitor, person.email, DEFAULT_PASSWORD)
    again = give_code(visitor, recovery_codes[0])

    assert again.status_code == 200
    assert alerts_of(again) == ["The code is not valid."]
    assert not signed_in(visitor)


def test_the_code_page_without_a_right_password_first_sends_back_to_the_password(visitor):
    page = visitor.get(CODE_PAGE, params={"next": AUTHORIZE_NEXT})

    assert page.status_code == 302
    assert page.headers["location"].startswith("/oauth/sign-in/?")
    assert not signed_in(visitor)


def test_a_person_without_a_second_factor_is_signed_in_by_the_password(visitor):
    tenant = make_tenant()
    person = owner_of(tenant)

    response = sign_in(visitor, person.email, DEFAULT_PASSWORD)

    assert response.status_code == 302
    assert response.headers["location"] == AUTHORIZE_NEXT
    assert signed_in(visitor)
