"""A real OpenID Connect provider for the single sign-on tests, and the browser's side of the
flow against it.

`oidc-provider-mock` runs as a server on loopback (`Provider`): discovery, JWKS, the authorization
endpoint (a form that takes the subject to sign in as), the token endpoint, and `PUT /users/<sub>`
to set a subject's claims. `ResigningProxy` stands in front of it and re-signs every ID token with
a key of its own (under the provider's key id, if it names one): a token signed by another key.

The flow (`SsoBrowser`) is what a browser does, without one: our start endpoint (through the
test client, which keeps the binding cookie), the provider's form (over HTTP), our callback, and
the one-time code the front end receives.
"""

import base64
import contextlib
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import requests
from joserfc import jwt
from joserfc.jwk import RSAKey
from oidc_provider_mock import run_server_in_thread
from rest_framework.test import APIClient

from tests.helpers import API

TENANT_SSO = f"{API}/tenant/sso/"
TOKEN_SSO = f"{API}/auth/token/sso/"
FRONT_END = "https://app.acme.example/sso/done"
DOMAIN = "acme.example"
CLIENT_ID = "tenantapi-client"
CLIENT_SECRET = "s3cret-of-the-idp-client-0123456789"


def start_url(tenant) -> str:
    return f"{API}/auth/sso/{tenant.slug}/start/"


class Provider:
    """oidc-provider-mock on a free port of loopback, while the context lasts."""

    def __init__(self, **options) -> None:
        self._options = {"require_nonce": True, **options}
        self._stack = contextlib.ExitStack()
        self.port = 0

    def __enter__(self) -> "Provider":
        server = self._stack.enter_context(run_server_in_thread(port=0, **self._options))
        self.port = server.server_port
        return self

    def __exit__(self, *exc_info) -> None:
        self._stack.close()

    def stop(self) -> None:
        self._stack.close()

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_user(self, sub: str, **claims) -> None:
        response = requests.put(f"{self.issuer}/users/{sub}", json=claims, timeout=5)
        assert response.status_code == 204, response.text


@contextlib.contextmanager
def provider(**options) -> Iterator[Provider]:
    with Provider(**options) as running:
        yield running


def expiring_provider() -> Provider:
    """A provider whose ID tokens expired ten minutes before they were issued."""
    return Provider(access_token_max_age=timedelta(minutes=-10))


class ResigningProxy:
    """Forwards every request to `upstream`, keeping the Host header (so the provider names the
    proxy as its issuer everywhere), and re-signs the ID tokens it answers with another key."""

    def __init__(self, upstream: Provider) -> None:
        self.upstream = upstream
        self.key = RSAKey.generate_key(2048)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.forward(self, "GET")

            def do_POST(self) -> None:
                proxy.forward(self, "POST")

            def do_PUT(self) -> None:
                proxy.forward(self, "PUT")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> "ResigningProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()

    def forward(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "content-length"}
        answer = requests.request(
            method,
            f"http://127.0.0.1:{self.upstream.port}{handler.path}",
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=5,
        )
        content = answer.content
        if handler.path.startswith("/oauth2/token") and answer.status_code == 200:
            token = answer.json()
            token["id_token"] = self.resigned(token["id_token"])
            content = json.dumps(token).encode()
        handler.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        handler.wfile.write(content)

    def resigned(self, id_token: str) -> str:
        header_part, claims_part, _ = id_token.split(".")
        header = json.loads(_unpadded_b64decode(header_part))
        claims = json.loads(_unpadded_b64decode(claims_part))
        # The provider's key id, if its tokens name one: the forgery claims to be its key.
        forged = {"alg": "RS256", **({"kid": header["kid"]} if "kid" in header else {})}
        return jwt.encode(forged, claims, self.key)


def _unpadded_b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def configure(client: APIClient, issuer: str, **overrides):
    body = {
        "issuer": issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "domains": [DOMAIN],
        "redirect_uris": [FRONT_END],
        **overrides,
    }
    return client.put(TENANT_SSO, body, format="json")


class SsoBrowser:
    """One browser signing in to `tenant` through its provider."""

    def __init__(self, tenant, client: APIClient | None = None) -> None:
        self.tenant = tenant
        self.client = client or APIClient()

    def start(self, *, redirect_uri: str = FRONT_END, state: str = "front-end-state"):
        return self.client.get(
            start_url(self.tenant), {"redirect_uri": redirect_uri, "state": state}
        )

    def at_provider(self, sub: str, *, tamper=None) -> str:
        """Start, then sign in at the provider as `sub`: the callback URL (path and query) the
        provider sends the browser back to. `tamper(params)` may change the authorization
        request on its way to the provider."""
        started = self.start()
        assert started.status_code == 302, started.content
        location = started["Location"]
        if tamper is not None:
            parts = urlsplit(location)
            params = {k: v[0] for k, v in parse_qs(parts.query).items()}
            tamper(params)
            location = urlunsplit(parts._replace(query=urlencode(params)))
        answer = requests.post(location, data={"sub": sub}, allow_redirects=False, timeout=5)
        assert answer.status_code == 302, answer.text
        back = urlsplit(answer.headers["Location"])
        assert back.path == f"{API}/auth/sso/callback/", back
        return f"{back.path}?{back.query}"

    def callback(self, callback: str):
        return self.client.get(callback)

    def sign_in(self, sub: str) -> dict:
        """The whole flow as `sub`: the token pair."""
        back = self.callback(self.at_provider(sub))
        assert back.status_code == 302, back.content
        return redeem(self.client, front_end_params(back)["code"]).json()


def front_end_params(response) -> dict[str, str]:
    location = urlsplit(response["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == FRONT_END, location
    return {k: v[0] for k, v in parse_qs(location.query).items()}


def redeem(client: APIClient, code: str):
    return client.post(TOKEN_SSO, {"code": code}, format="json")
