"""The sign-in page of the authorization server, in this process (WSGI, the test's transaction),
as a visitor uses it: its form, with the CSRF token the page gave.

It tells no one which emails have an account, refuses a form posted without its CSRF token,
locks an account out after repeated failures as the API's sign-in does, never sends a person to
another host afterwards, lets no deactivated person in; and the sign-in, consent and error pages
are never framed.
"""

import itertools
from html.parser import HTMLParser
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from tests.factories import DEFAULT_PASSWORD, make_user
from tests.oauth.conftest import register_app
from tests.oauth.flow import form_of, in_process, pkce_pair

pytestmark = pytest.mark.django_db

SIGN_IN = "/oauth/sign-in/"
# Where the authorization page sends a person to sign in: a page of this server.
AUTHORIZE_NEXT = "/oauth/authorize/?client_id=any"
WRONG_ANSWER = "The email or the password is wrong."

_accounts = itertools.count(1)


def new_email() -> str:
    """An email no other test of the run signs in with: failure counts live on in Redis."""
    return f"sign-in-page-{next(_accounts)}@example.com"


class ErrorParser(HTMLParser):
    """The texts of the page's alerts (`role="alert"`): what the person is told went wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.alerts: list[str] = []
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._depth:
            self._depth += 1
        elif ("role", "alert") in attrs:
            self._depth = 1
            self.alerts.append("")

    def handle_endtag(self, tag: str) -> None:
        if self._depth:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth:
            self.alerts[-1] = " ".join((self.alerts[-1] + " " + data).split())


def alerts_of(response: httpx.Response) -> list[str]:
    parser = ErrorParser()
    parser.feed(response.text)
    return parser.alerts


def sign_in(
    visitor: httpx.Client, email: str, password: str, *, next_url: str = AUTHORIZE_NEXT
) -> httpx.Response:
    """Open the sign-in page (with `next`, as the authorization page links it) and post its
    form."""
    return fill_in(visitor, SIGN_IN, next_url, username=email, password=password)


def fill_in(visitor: httpx.Client, path: str, next_url: str, **fields: str) -> httpx.Response:
    """Open a page of these forms (with `next`) and post its form with `fields`, its CSRF token
    and its `next` as the page gave them."""
    page = visitor.get(path, params={"next": next_url})
    assert page.status_code == 200, page.text
    form = form_of(page.text)
    return visitor.post(
        path,
        data={
            "csrfmiddlewaretoken": form.inputs["csrfmiddlewaretoken"],
            "next": form.inputs["next"],
            **fields,
        },
    )


def signed_in(visitor: httpx.Client) -> bool:
    """Whether the browser holds a session: the sign-in page then sends it straight on."""
    return visitor.get(SIGN_IN, params={"next": AUTHORIZE_NEXT}).status_code == 302


def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(visitor):
    person = make_user(email=new_email())

    wrong_password = sign_in(visitor, person.email, "not the password")
    unknown_email = sign_in(visitor, new_email(), DEFAULT_PASSWORD)

    assert wrong_password.status_code == unknown_email.status_code == 200
    assert alerts_of(wrong_password) == alerts_of(unknown_email) == [WRONG_ANSWER]
    assert not signed_in(visitor)


def test_a_form_posted_without_its_csrf_token_is_refused(visitor):
    person = make_user(email=new_email())
    credentials = {"username": person.email, "password": DEFAULT_PASSWORD, "next": AUTHORIZE_NEXT}

    # Neither from a page that never loaded the form (no CSRF cookie either) ...
    assert visitor.post(SIGN_IN, data=credentials).status_code == 403
    # ... nor with the cookie of the page but without the token in the form
    assert visitor.get(SIGN_IN).status_code == 200
    assert visitor.post(SIGN_IN, data=credentials).status_code == 403
    assert not signed_in(visitor)
    # The same person, the same password, with the token: signed in
    assert sign_in(visitor, person.email, DEFAULT_PASSWORD).status_code == 302
    assert signed_in(visitor)


def test_repeated_failures_lock_the_account_out_even_with_the_right_password(
    visitor, wsgi_transport, settings
):
    settings.LOGIN_FAILURE_LIMIT = 3
    person = make_user(email=new_email())

    failures = [sign_in(visitor, person.email, "not the password") for _ in range(3)]
    assert [response.status_code for response in failures] == [200] * 3
    locked = sign_in(visitor, person.email, DEFAULT_PASSWORD)

    assert locked.status_code == 429, locked.text
    assert locked.headers["content-type"].startswith("text/html")
    [refusal] = alerts_of(locked)
    assert refusal.startswith("Too many requests"), refusal
    assert not signed_in(visitor)
    # The same lockout as the API's sign-in: the token endpoint refuses the right password too
    with httpx.Client(base_url="http://testserver", transport=wsgi_transport) as api:
        token = api.post(
            "/api/v1/auth/token/", json={"email": person.email, "password": DEFAULT_PASSWORD}
        )
    assert token.status_code == 429, token.text


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.example/steal",
        "//evil.example/steal",
        "http://testserver.evil.example/steal",
        "https:///evil.example/steal",
    ],
)
def test_a_next_to_another_host_is_not_followed_after_signing_in(visitor, next_url):
    person = make_user(email=new_email())

    response = sign_in(visitor, person.email, DEFAULT_PASSWORD, next_url=next_url)

    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert location.netloc in ("", "testserver"), response.headers["location"]
    assert "evil.example" not in response.headers["location"]
    assert signed_in(visitor)


def test_a_next_on_this_server_is_followed_after_signing_in(visitor):
    person = make_user(email=new_email())

    response = sign_in(visitor, person.email, DEFAULT_PASSWORD)

    assert response.status_code == 302
    assert response.headers["location"] == AUTHORIZE_NEXT


def test_a_deactivated_person_cannot_sign_in(visitor):
    person = make_user(email=new_email(), is_active=False)

    response = sign_in(visitor, person.email, DEFAULT_PASSWORD)

    # Told exactly what a wrong password is told: the page does not say the account exists
    assert response.status_code == 200
    assert alerts_of(response) == [WRONG_ANSWER]
    assert not signed_in(visitor)


def test_the_sign_in_consent_and_error_pages_are_never_framed(visitor, wsgi_transport, shop):
    _, owner, owner_api = shop
    dance = in_process(register_app(owner_api), wsgi_transport)
    _, challenge = pkce_pair()
    consent = dance.consent_page(email=owner.email, scope="catalog.read", challenge=challenge)
    assert consent.text.count('id="authorizationForm"') == 1
    sign_in_page = visitor.get(SIGN_IN, params={"next": AUTHORIZE_NEXT})
    failed_sign_in = sign_in(visitor, new_email(), "not the password")
    error_page = visitor.get("/oauth/authorize/?" + urlencode({"client_id": "nobody"}))
    assert error_page.status_code == 400

    for page in (sign_in_page, failed_sign_in, consent, error_page):
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["X-Frame-Options"] == "DENY"


def test_the_consent_page_signs_another_person_out_and_back_to_the_same_request(
    wsgi_transport, shop
):
    _, owner, owner_api = shop
    dance = in_process(register_app(owner_api), wsgi_transport)
    _, challenge = pkce_pair()
    consent = dance.consent_page(email=owner.email, scope="catalog.read", challenge=challenge)
    sign_out = form_of(consent.text.split('id="authorizationForm"', 1)[1].split("</form>", 1)[1])

    signed_out = dance.browser.post(
        "/oauth/sign-out/",
        data={
            "csrfmiddlewaretoken": sign_out.inputs["csrfmiddlewaretoken"],
            "next": sign_out.inputs["next"],
        },
    )

    # Back to the same authorization request, which now asks who is there.
    assert signed_out.status_code == 302
    assert signed_out.headers["location"] == str(consent.url.raw_path.decode())
    again = dance.browser.get(signed_out.headers["location"])
    assert again.status_code == 302
    assert urlsplit(again.headers["location"]).path == SIGN_IN
