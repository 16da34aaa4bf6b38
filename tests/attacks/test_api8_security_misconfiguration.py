"""OWASP API8:2023, security misconfiguration.

`manage.py check --deploy` passing with the production settings, without a single warning, and
production refusing to start without its secrets, are proven in
tests/config/test_deploy_settings.py; every error being a problem document with DEBUG on or off in
tests/kernel/test_problems.py. This module adds, with the production settings loaded in a process of
their own: the security headers on API responses, errors and the operational endpoints alike; and,
in the test process: CORS grants no origin it was not given and grants the one it was; and with
DEBUG on, a 404 or an unexpected exception in a tenant view is still a problem document with no
traceback, setting or SQL in it.

The source review's cases of this category (docs/security.md): the audit log's database functions
callable by PUBLIC and run as a superuser (finding 10, tests/kernel/test_audit_functions.py);
`/readyz` telling hosts and errors to anyone (12, tests/kernel/test_health.py); the WebSocket server
serving the whole API (3, tests/system/test_asgi_server.py); a superuser as the application's
database role (4, tests/kernel/test_database_role.py).
"""

import json
import secrets

import pytest
from rest_framework.test import APIClient

from tests.attacks.support import Tenancy, tenancy
from tests.config.test_deploy_settings import manage
from tests.helpers import API, assert_problem

pytestmark = pytest.mark.django_db

TENANT = f"{API}/tenant/"
# Run in a process started with the production settings: what a deployed server answers. None of
# these requests needs the database, which that process does not have (the tests' is made later).
PRODUCTION_PROBE = """
import json
from django.test import Client

client = Client(HTTP_HOST="api.example.com", raise_request_exception=False)
answers = {}
URLS = ["/api/v1/schema/?format=json", "/api/v1/no-such-thing/", "/api/v1/auth/token/"]
URLS.append("/healthz")
HEADERS = ["X-Content-Type-Options", "Referrer-Policy", "X-Frame-Options"]
HEADERS.append("Strict-Transport-Security")
for url in URLS:
    response = client.get(url, secure=True)
    answers[url] = {
        "status": response.status_code,
        "headers": {name: response.get(name) for name in HEADERS},
        "content_type": response.get("Content-Type"),
    }
print("PROBE" + json.dumps(answers))
"""


@pytest.fixture
def own() -> Tenancy:
    return tenancy("Config")


def test_production_responses_carry_the_security_headers():
    result = manage(
        "shell",
        "-c",
        PRODUCTION_PROBE,
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="api.example.com",
    )

    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("PROBE")]
    answers = json.loads(line.removeprefix("PROBE"))
    assert {url: answer["status"] for url, answer in answers.items()} == {
        "/api/v1/schema/?format=json": 200,
        "/api/v1/no-such-thing/": 404,
        "/api/v1/auth/token/": 405,
        "/healthz": 200,
    }
    for url, answer in answers.items():
        headers = answer["headers"]
        assert headers["X-Content-Type-Options"] == "nosniff", url
        assert headers["Referrer-Policy"] == "same-origin", url
        assert headers["X-Frame-Options"] == "DENY", url
        assert "max-age=" in (headers["Strict-Transport-Security"] or ""), url
    assert answers["/api/v1/no-such-thing/"]["content_type"] == "application/problem+json"


def test_cors_grants_no_unlisted_origin(own, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example"]

    simple = own.client.get(TENANT, HTTP_ORIGIN="https://evil.example")
    preflight = APIClient().options(
        TENANT,
        HTTP_ORIGIN="https://evil.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="PATCH",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization",
    )
    lookalike = own.client.get(TENANT, HTTP_ORIGIN="https://app.example.evil.example")

    for response in (simple, preflight, lookalike):
        assert "Access-Control-Allow-Origin" not in response
        assert "Access-Control-Allow-Credentials" not in response


def test_cors_grants_a_listed_origin(own, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example"]

    response = own.client.get(TENANT, HTTP_ORIGIN="https://app.example")

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "https://app.example"
    # The rate-limit headers are readable by the browser app too.
    assert "RateLimit-Remaining" in response["Access-Control-Expose-Headers"]


@pytest.mark.parametrize("url", [f"{API}/no-such-thing/", "/no-such-thing", f"{API}/products/x/"])
def test_with_debug_on_a_404_is_still_a_problem(own, settings, url):
    settings.DEBUG = True

    response = own.client.get(url)

    body = assert_problem(response, 404)
    assert "Traceback" not in response.content.decode()
    assert "urlpatterns" not in response.content.decode()
    assert set(body) >= {"type", "title", "status", "request_id"}


def test_with_debug_on_an_unexpected_error_shows_nothing_of_it(own, settings, monkeypatch):
    settings.DEBUG = True
    from accounts.api import tenant as views

    def explode(*args, **kwargs):
        raise RuntimeError("SELECT secret FROM settings WHERE SECRET_KEY = 'hunter2'")

    monkeypatch.setattr(views.TenantView, "get", explode)
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=own.client._credentials["HTTP_AUTHORIZATION"])

    response = client.get(TENANT)

    assert_problem(response, 500)
    text = response.content.decode()
    for leak in ("hunter2", "Traceback", "SELECT", "RuntimeError"):
        assert leak not in text
