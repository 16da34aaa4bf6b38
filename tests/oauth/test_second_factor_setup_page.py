"""A person whose tenant requires a second factor they have not set up is told so on the consent
page, sets it up on a page of the authorization server (a QR code and the secret, a first code,
the recovery codes) and goes back to authorize the app."""

import html
import re

import pyotp
import pytest

from tests.factories import make_member, make_tenant
from tests.helpers import client_for, owner_of
from tests.oauth.conftest import register_app
from tests.oauth.flow import code_from, form_of, in_process, pkce_pair

pytestmark = pytest.mark.django_db


def test_a_held_member_sets_the_factor_up_from_the_consent_page_then_authorizes(
    wsgi_transport, django_capture_on_commit_callbacks
):
    tenant = make_tenant()
    owner_api = client_for(owner_of(tenant), tenant)
    app = register_app(owner_api, scopes=["catalog.read"])
    member = make_member(tenant, roles=("viewer",)).user
    with django_capture_on_commit_callbacks(execute=True):
        assert (
            owner_api.patch("/api/v1/tenant/", {"require_mfa": True}, format="json").status_code
            == 200
        )
    dance = in_process(app, wsgi_transport)
    verifier, challenge = pkce_pair()
    consent = dance.consent_page(
        email=member.email, scope="catalog.read", state="st", challenge=challenge
    )

    # The consent page says what is missing, and where to set it up
    assert f"{tenant.name} requires" in " ".join(consent.text.split())
    assert "two-factor authentication" in consent.text
    link = html.unescape(re.search(r'href="(/oauth/second-factor/\?next=[^"]+)"', consent.text)[1])
    setup = dance.browser.get(link)
    assert setup.status_code == 200
    assert "<svg" in setup.text
    secret = re.search(r'id="secret">([A-Z2-7]{32})<', setup.text)[1]
    form = form_of(setup.text)
    wrong = dance.browser.post(
        link,
        data={
            "csrfmiddlewaretoken": form.inputs["csrfmiddlewaretoken"],
            "next": form.inputs["next"],
            "code": "000000",
        },
    )
    assert "The code is not valid" in wrong.text
    assert secret in wrong.text  # the secret the app has taken stays
    done = dance.browser.post(
        link,
        data={
            "csrfmiddlewaretoken": form.inputs["csrfmiddlewaretoken"],
            "next": form.inputs["next"],
            "code": pyotp.TOTP(secret).now(),
        },
    )
    assert done.status_code == 200
    assert len(set(re.findall(r"<code>([A-Z2-7]{5}-[A-Z2-7]{5})</code>", done.text))) == 10
    back = html.unescape(re.search(r'<a href="([^"]+)">Continue</a>', done.text)[1])
    assert back.startswith("/oauth/authorize/?")

    # Back on the consent page, nothing is missing any more, and the app gets its code
    again = dance.browser.get(back)
    assert "two-factor authentication" not in again.text
    redirect = dance.decide(again, allow=True)
    code = code_from(redirect, state="st", redirect_uri=app.redirect_uri)
    assert dance.exchange(code, verifier).status_code == 200


def test_the_setup_page_sends_a_visitor_who_is_not_signed_in_to_the_sign_in(visitor):
    response = visitor.get("/oauth/second-factor/")

    assert response.status_code == 302
    assert response.headers["location"].startswith("/oauth/sign-in/?next=")
