"""A third-party app's side of the authorization code flow, as a real client does it over HTTP:
the redirect to the sign-in page, its form (with its CSRF token), the consent page, the code on
the redirect, and the token endpoint. `httpx` against a live server (`Dance(server.url, app)`),
or against the application in this process (`in_process(app)`: WSGI, the test's own database
transaction): the same requests either way.
"""

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from tests.factories import DEFAULT_PASSWORD

REDIRECT_URI = "https://app.example/callback"


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge), RFC 7636."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class FormParser(HTMLParser):
    """The inputs and selects of the page's forms, by name; a select's options."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, str] = {}
        self.options: dict[str, list[tuple[str, str, bool]]] = {}
        self._select: str | None = None
        self._option: tuple[str, bool] | None = None
        self.buttons: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = {key: value or "" for key, value in attrs}
        if tag == "input" and "name" in named:
            self.inputs[named["name"]] = named.get("value", "")
        elif tag == "select":
            self._select = named.get("name")
            self.options[self._select] = []
        elif tag == "option" and self._select is not None:
            self._option = (named.get("value", ""), "selected" in named)
        elif tag == "button":
            self.buttons.append(named)

    def handle_data(self, data: str) -> None:
        if self._option is not None and self._select is not None:
            value, selected = self._option
            self.options[self._select].append((value, data.strip(), selected))
            self._option = None

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def form_of(html: str) -> FormParser:
    parser = FormParser()
    parser.feed(html)
    return parser


@dataclass
class App:
    client_id: str
    client_secret: str | None
    redirect_uri: str = REDIRECT_URI
    scopes: list[str] = field(default_factory=list)


@dataclass
class Dance:
    """One person's browser and one app's back end, against `base_url`."""

    base_url: str
    app: App
    # How requests travel: over the network by default; `in_process` passes a WSGI transport.
    transport: httpx.BaseTransport | None = None
    browser: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.browser = self.client()

    def client(self, **kwargs: Any) -> httpx.Client:
        """A new HTTP client (its own cookies) to the same server."""
        return httpx.Client(
            base_url=self.base_url, timeout=20.0, transport=self.transport, **kwargs
        )

    # --- the browser's part ---------------------------------------------------------------
    def authorize_url(self, *, scope: str, state: str, challenge: str | None, **extra) -> str:
        params = {
            "response_type": "code",
            "client_id": self.app.client_id,
            "redirect_uri": self.app.redirect_uri,
            "scope": scope,
            "state": state,
            **({"code_challenge": challenge, "code_challenge_method": "S256"} if challenge else {}),
            **extra,
        }
        return "/oauth/authorize/?" + urlencode(params)

    def sign_in(self, response: httpx.Response, email: str, password: str) -> httpx.Response:
        """From the authorization page's redirect to the sign-in form, through the form."""
        assert response.status_code == 302, response.text
        page = self.browser.get(response.headers["location"])
        assert page.status_code == 200, page.text
        form = form_of(page.text)
        return self.browser.post(
            page.url.raw_path.decode(),
            data={
                "csrfmiddlewaretoken": form.inputs["csrfmiddlewaretoken"],
                "next": form.inputs["next"],
                "username": email,
                "password": password,
            },
        )

    def consent_page(
        self,
        *,
        email: str,
        scope: str,
        password: str = DEFAULT_PASSWORD,
        state: str = "s1",
        challenge: str | None = None,
    ) -> httpx.Response:
        """Up to the consent page: signed in after the authorization page sent us to do so."""
        first = self.browser.get(self.authorize_url(scope=scope, state=state, challenge=challenge))
        signed_in = self.sign_in(first, email, password)
        assert signed_in.status_code == 302, signed_in.text
        page = self.browser.get(signed_in.headers["location"])
        assert page.status_code == 200, page.text
        return page

    def decide(self, page: httpx.Response, *, allow: bool, tenant: Any = None) -> httpx.Response:
        """Submit the consent page: Allow (in `tenant`, else the page's default) or Deny."""
        form = form_of(page.text)
        data = dict(form.inputs)
        if "tenant" in form.options:
            default = next((v for v, _, selected in form.options["tenant"] if selected), None)
            data["tenant"] = str(tenant) if tenant is not None else (default or "")
        if allow:
            data["allow"] = "on"
        return self.browser.post(str(page.url.raw_path.decode()), data=data)

    # --- the app's back end ---------------------------------------------------------------
    def token(self, **data: str) -> httpx.Response:
        """POST /oauth/token/, authenticated as the app (HTTP Basic when it has a secret)."""
        auth = (self.app.client_id, self.app.client_secret) if self.app.client_secret else None
        if auth is None:
            data.setdefault("client_id", self.app.client_id)
        with self.client() as backend:
            return backend.post("/oauth/token/", data=data, auth=auth)

    def exchange(self, code: str, verifier: str) -> httpx.Response:
        return self.token(
            grant_type="authorization_code",
            code=code,
            redirect_uri=self.app.redirect_uri,
            code_verifier=verifier,
        )

    def tokens(self, *, email: str, scope: str, tenant: Any = None) -> dict:
        """The whole dance: the person allows, the app exchanges the code; the token answer."""
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(8)
        page = self.consent_page(email=email, scope=scope, state=state, challenge=challenge)
        redirect = self.decide(page, allow=True, tenant=tenant)
        code = code_from(redirect, state=state, redirect_uri=self.app.redirect_uri)
        answer = self.exchange(code, verifier)
        assert answer.status_code == 200, answer.text
        return answer.json()


def redirect_params(response: httpx.Response, redirect_uri: str) -> dict[str, str]:
    """The query of a redirect to the app's redirect URI."""
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(redirect_uri + "?"), location
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


def code_from(response: httpx.Response, *, state: str, redirect_uri: str) -> str:
    params = redirect_params(response, redirect_uri)
    assert params["state"] == state
    return params["code"]


def in_process(app: App, transport: httpx.BaseTransport) -> Dance:
    """The dance against the application in this process (the `wsgi_transport` fixture)."""
    return Dance("http://testserver", app, transport=transport)
