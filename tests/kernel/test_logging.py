"""Log lines: JSON from every process, no secret in any of them, and the slow-query line.

This module is also the URLconf of its tests: the real URLs plus a few views under /logging/.
"""

import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from django.conf import settings
from django.db import connection, connections
from django.http import HttpRequest, JsonResponse
from django.test import Client, override_settings
from django.urls import path
from psycopg import sql as psycopg_sql

from config.urls import handler404, handler500  # noqa: F401 - this module is a URLconf
from config.urls import urlpatterns as config_urlpatterns
from tests.fixtures.logs import captured_logs, parse_json_lines
from tests.fixtures.servers import LiveServer, server_environment, stop_process, wait_until

pytestmark = pytest.mark.urls(__name__)

log = structlog.get_logger("tests.logging_views")
stdlib_log = logging.getLogger("tests.logging_views.stdlib")

# Credentials in the shapes they take in this service. None may appear in any log output.
ACCESS_JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJ1c2VyX2lkIjoiNDIiLCJ0ZW5hbnRfaWQiOiJhY21lIiwidG9rZW5fdHlwZSI6ImFjY2VzcyJ9"
    ".S1gnatureOfTheAccessTokenXyZ0123456789abcd"
)
QUERY_TOKEN = "qtok_7Hq2Lm9Zr4Xv8Bn1"
PASSWORD = "correct horse battery staple"
API_KEY = "tk_9f8e7d6c5b4a3f2e1d0c"
# In two parts, so that no secret-shaped string is tracked in the repository.
STRIPE_KEY = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRETS = [ACCESS_JWT, QUERY_TOKEN, PASSWORD, API_KEY, STRIPE_KEY, WEBHOOK_SECRET]

SLOW_SQL = "SELECT pg_sleep(%s), %s::text AS marker"
SQL_PARAMETER = "param-value-that-must-not-be-logged"


# --- Views --------------------------------------------------------------------------------------


def careless_view(request: HttpRequest) -> JsonResponse:
    """Logs everything a careless view could, then fails with the credentials in its message."""
    body = json.loads(request.body)
    log.info(
        "login attempt",
        headers=dict(request.headers),
        body=body,
        query=request.GET.dict(),
        full_path=request.get_full_path(),
    )
    stdlib_log.warning(
        "raw request: %s %s %s",
        request.headers["Authorization"],
        request.body.decode(),
        request.get_full_path(),
    )
    # The message itself carries the secrets: that is the point here.
    message = f"charging with {STRIPE_KEY}, signing with {WEBHOOK_SECRET}, as Api-Key {API_KEY}"
    log.info(message)
    try:
        raise ValueError(f"rejected {request.headers['Authorization']} for {body}")
    except ValueError:
        log.exception("verification failed")
    raise RuntimeError(f"login failed: Authorization: {request.headers['Authorization']}")


def slow_query_view(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute(SLOW_SQL, [float(request.GET["seconds"]), SQL_PARAMETER])
    return JsonResponse({})


urlpatterns = [
    path("logging/careless/", careless_view),
    path("logging/slow-query/", slow_query_view),
    *config_urlpatterns,
]


# --- Redaction ----------------------------------------------------------------------------------


def _fragments(secret: str) -> list[str]:
    # A secret cut in two still leaks: look for its ends as well as the whole of it.
    return [secret, secret[:12], secret[-12:]]


def test_secrets_never_reach_the_logs() -> None:
    client = Client(raise_request_exception=False)

    with captured_logs() as logs:
        response = client.post(
            f"/logging/careless/?token={QUERY_TOKEN}&page=1",
            data={"email": "ada@example.com", "password": PASSWORD},
            content_type="application/json",
            headers={"Authorization": f"Bearer {ACCESS_JWT}", "X-Request-ID": "careless-1"},
        )

    assert response.status_code == 500
    for secret in SECRETS:
        for fragment in _fragments(secret):
            assert fragment not in logs.text, f"{fragment!r} of a secret is in the logs"
    # The lines were written, with everything else in them.
    attempt = logs.one(event="login attempt")
    assert attempt["headers"]["Authorization"] == "[REDACTED]"
    assert attempt["body"] == {"email": "ada@example.com", "password": "[REDACTED]"}
    assert attempt["query"] == {"token": "[REDACTED]", "page": "1"}
    assert attempt["full_path"] == "/logging/careless/?token=[REDACTED]&page=1"
    raw = logs.one(logger="tests.logging_views.stdlib")
    assert raw["event"].startswith("raw request: Bearer [REDACTED] ")
    assert "ada@example.com" in raw["event"]
    assert logs.one(event="verification failed")["exception"].startswith("Traceback")
    # The unhandled error, logged by the error handling with its traceback, in the same context.
    error = next(line for line in logs.records() if "RuntimeError" in line.get("exception", ""))
    assert error["request_id"] == "careless-1"
    assert "Authorization: [REDACTED]" in error["exception"]
    access = logs.one(logger="tenantapi.access")
    assert access["path"] == "/logging/careless/"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"token is {ACCESS_JWT}.", "token is [REDACTED]."),
        (f"sent 'Authorization: Bearer {ACCESS_JWT}'", "sent 'Authorization: [REDACTED]'"),
        (f"header Bearer {QUERY_TOKEN} seen", "header Bearer [REDACTED] seen"),
        (f"with Api-Key {API_KEY}, twice", "with Api-Key [REDACTED], twice"),
        (f"key {STRIPE_KEY} and {WEBHOOK_SECRET}", "key [REDACTED] and [REDACTED]"),
        (f"GET /ws/?token={QUERY_TOKEN}&x=1", "GET /ws/?token=[REDACTED]&x=1"),
        (f"{{'password': '{PASSWORD}', 'n': 1}}", "{'password': '[REDACTED]', 'n': 1}"),
        (f'{{"new_password": "{PASSWORD}"}}', '{"new_password": "[REDACTED]"}'),
        ("client_secret=abc123&grant=x", "client_secret=[REDACTED]&grant=x"),
    ],
)
def test_secret_looking_text_is_masked_wherever_it_appears(text: str, masked: str) -> None:
    with captured_logs() as logs:
        log.info(text, detail=[text])
        stdlib_log.warning("%s", text)

    structured, stdlib = logs.records()
    assert structured["event"] == masked
    assert structured["detail"] == [masked]
    assert stdlib["event"] == masked


def test_secret_keys_are_redacted_at_any_depth() -> None:
    with captured_logs() as logs:
        log.info(
            "nested",
            password="p1",
            data={
                "accounts": [{"api_key": "p2", "name": "kept"}, {"Refresh": "p3"}],
                "clientSecret": "p4",
                "X-Api-Key": "p5",
                "session": {"Cookie": "p6", "csrftoken": "p7", "signature": "p8"},
            },
        )

    line = logs.one(event="nested")
    assert line["password"] == "[REDACTED]"
    assert line["data"] == {
        "accounts": [{"api_key": "[REDACTED]", "name": "kept"}, {"Refresh": "[REDACTED]"}],
        "clientSecret": "[REDACTED]",
        "X-Api-Key": "[REDACTED]",
        "session": {"Cookie": "[REDACTED]", "csrftoken": "[REDACTED]", "signature": "[REDACTED]"},
    }


def test_identifiers_of_credentials_are_kept() -> None:
    with captured_logs() as logs:
        log.info(
            "ids",
            api_key_id="5d4c",
            key_prefix="tk_9f8e",
            token_type="access",
            request_id="r-1",
            tenant_id="t-1",
            status=401,
        )

    line = logs.one(event="ids")
    assert line["api_key_id"] == "5d4c"
    assert line["key_prefix"] == "tk_9f8e"
    assert line["token_type"] == "access"
    assert (line["request_id"], line["tenant_id"], line["status"]) == ("r-1", "t-1", 401)


# --- Slow queries -------------------------------------------------------------------------------


@pytest.mark.django_db
@override_settings(SLOW_QUERY_MS=50)
def test_a_slow_statement_is_logged_with_its_sql_and_request_context(client: Client) -> None:
    with captured_logs() as logs:
        client.get("/logging/slow-query/?seconds=0.3", headers={"X-Request-ID": "slow-1"})

    line = logs.one(event="slow_query", sql=SLOW_SQL)
    assert line["level"] == "warning"
    assert line["logger"] == "tenantapi.db"
    assert line["request_id"] == "slow-1"
    assert line["duration_ms"] >= 50
    assert line["database"] == "default"
    assert SQL_PARAMETER not in logs.text


@pytest.mark.django_db
@override_settings(SLOW_QUERY_MS=60_000)
def test_a_statement_under_the_threshold_is_not_logged(client: Client) -> None:
    with captured_logs() as logs:
        client.get("/logging/slow-query/?seconds=0.05")

    assert logs.find(event="slow_query") == []


@pytest.mark.django_db
@override_settings(SLOW_QUERY_MS=50)
def test_a_slow_composed_statement_is_logged_by_its_parts() -> None:
    """Statements built with psycopg's `sql` module (the row-level security DDL) are objects,
    not strings: a slow one is logged, not a TypeError in the middle of a migration."""
    statement = psycopg_sql.SQL("SELECT pg_sleep({seconds}), {name}").format(
        seconds=psycopg_sql.Literal(0.2), name=psycopg_sql.Literal("composed")
    )
    with captured_logs() as logs, connection.cursor() as cursor:
        cursor.execute(statement)

    (line,) = logs.find(event="slow_query")
    assert "pg_sleep" in line["sql"]
    assert "composed" in line["sql"]


@pytest.fixture
def fresh_connection() -> Iterator:
    conn = connections.create_connection("default")
    yield conn
    conn.close()


@pytest.mark.django_db
@override_settings(SLOW_QUERY_MS=50)
def test_the_slow_query_log_is_on_each_connection_once(fresh_connection) -> None:
    def passthrough(execute, sql, params, many, context):
        return execute(sql, params, many, context)

    # Given a connection opened inside another execute wrapper's block, whose end pops a wrapper
    with fresh_connection.execute_wrapper(passthrough), fresh_connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    with captured_logs() as first, fresh_connection.cursor() as cursor:
        cursor.execute(SLOW_SQL, [0.2, SQL_PARAMETER])
    # and then reconnected, which sends connection_created again
    fresh_connection.close()
    fresh_connection.ensure_connection()
    with captured_logs() as second, fresh_connection.cursor() as cursor:
        cursor.execute(SLOW_SQL, [0.2, SQL_PARAMETER])

    assert len(first.find(event="slow_query", sql=SLOW_SQL)) == 1
    assert len(second.find(event="slow_query", sql=SLOW_SQL)) == 1


# --- Servers: every line they write is JSON -----------------------------------------------------

JSON_ENV = {"LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}


def test_uvicorn_writes_only_json_lines(
    live_asgi_server_factory: Callable[..., LiveServer],
) -> None:
    server = live_asgi_server_factory(**JSON_ENV)  # the command line of scripts/run

    response = httpx.get(
        f"{server.url}/healthz?token={QUERY_TOKEN}", headers={"X-Request-ID": "uvicorn-1"}
    )
    server.stop()

    assert response.headers["X-Request-ID"] == "uvicorn-1"
    records = parse_json_lines(server.log().splitlines())
    assert any(r["logger"] == "uvicorn.error" and "Started" in r["event"] for r in records)
    access = [r for r in records if r.get("request_id") == "uvicorn-1"]
    assert [(r["logger"], r["path"]) for r in access] == [("tenantapi.access", "/healthz")]
    assert QUERY_TOKEN not in server.log()


@pytest.fixture
def gunicorn_server(django_db_setup: None, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The API under gunicorn as compose runs it, on a Unix socket; yields (socket, log file)."""
    socket_path = tmp_path / "gunicorn.sock"
    log_path = tmp_path / "gunicorn.log"
    command = [
        sys.executable, "-m", "gunicorn", "config.wsgi:application",
        "--config", "config/gunicorn.conf.py",
        "--bind", f"unix:{socket_path}",
        "--workers", "1",
        "--no-control-socket",  # its default path is per user: two test processes would share it
    ]  # fmt: skip
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=settings.BASE_DIR,
            env=server_environment(**JSON_ENV),
            stdout=output,
            stderr=output,
        )

    def answers() -> bool:
        try:
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path))) as http:
                return http.get("http://localhost/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        if not wait_until(answers, process, timeout=30.0):
            pytest.fail(f"gunicorn did not start:\n{log_path.read_text(errors='replace')}")
        yield socket_path, log_path
    finally:
        stop_process(process)


def test_gunicorn_writes_only_json_lines(gunicorn_server: tuple[Path, Path]) -> None:
    socket_path, log_path = gunicorn_server
    marker = uuid.uuid4().hex

    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path))) as http:
        response = http.get(
            f"http://localhost/healthz?token={QUERY_TOKEN}", headers={"X-Request-ID": marker}
        )

    assert response.headers["X-Request-ID"] == marker
    text = log_path.read_text()
    records = parse_json_lines(text.splitlines())
    gunicorn_events = [r["event"] for r in records if r["logger"] == "gunicorn.error"]
    assert any(event.startswith("Booting worker") for event in gunicorn_events)
    access = [r for r in records if r.get("request_id") == marker]
    assert [(r["logger"], r["path"]) for r in access] == [("tenantapi.access", "/healthz")]
    assert QUERY_TOKEN not in text
