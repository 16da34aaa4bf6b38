"""/healthz and /readyz: liveness touches nothing; readiness checks each dependency for real."""

import socket
from collections.abc import Callable

import httpx
import pytest

from tests.fixtures.servers import LiveServer, RedisServer, free_port

CHECK_NAMES = {"database", "cache", "broker", "channel_layer"}
# Generous: each check is bounded by READINESS_CHECK_TIMEOUT (2 s); this only turns a hang into a
# failure instead of a stuck suite.
CLIENT_TIMEOUT = 30.0


def assert_not_cacheable(response) -> None:
    assert "no-store" in response.headers["Cache-Control"]


def test_healthz_answers_ok_and_is_not_cached(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert_not_cacheable(response)


@pytest.mark.django_db
def test_readyz_names_every_check_with_its_status_and_duration(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == CHECK_NAMES
    for check in body["checks"].values():
        assert check["status"] == "ok"
        assert check["duration_ms"] >= 0
    assert_not_cacheable(response)


def test_readyz_follows_redis_going_down(
    throwaway_redis: RedisServer, live_asgi_server_factory: Callable[..., LiveServer]
):
    # Given a server whose cache, channel layer and broker all live on a Redis of its own
    server = live_asgi_server_factory(
        REDIS_URL=throwaway_redis.url(0), CELERY_BROKER_URL=throwaway_redis.url(1)
    )
    with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as http:
        up = http.get("/readyz")
        # When that Redis stops
        throwaway_redis.stop()
        down = http.get("/readyz")
        alive = http.get("/healthz")

    # Then readiness turns from 200 to a 503 problem naming what is down, and liveness holds
    assert up.status_code == 200, up.text
    assert {name: check["status"] for name, check in up.json()["checks"].items()} == dict.fromkeys(
        CHECK_NAMES, "ok"
    )
    assert down.status_code == 503, down.text
    assert down.headers["Content-Type"] == "application/problem+json"
    problem = down.json()
    assert problem["type"].endswith("/service-unavailable")
    assert problem["status"] == 503
    assert problem["instance"] == "/readyz"
    checks = problem["checks"]
    assert checks["database"]["status"] == "ok"
    for name in ("cache", "channel_layer", "broker"):
        assert checks[name]["status"] == "down", checks
        assert checks[name]["reason"]
        assert name in problem["detail"]
    assert "database" not in problem["detail"]
    assert_not_cacheable(down)
    assert alive.status_code == 200


def test_readyz_answers_with_every_dependency_down_and_leaks_no_secret(
    redis_server_factory: Callable[..., RedisServer],
    live_asgi_server_factory: Callable[..., LiveServer],
):
    # Given credentials in every URL, a PostgreSQL port nobody listens on and a stopped Redis
    redis_server = redis_server_factory(password="redis-secret-7f3a")
    server = live_asgi_server_factory(
        DATABASE_URL=f"postgres://app:pg-secret-91c2@127.0.0.1:{free_port()}/nowhere",
        REDIS_URL=redis_server.url(0),
        CELERY_BROKER_URL=redis_server.url(1),
    )
    redis_server.stop()

    with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as http:
        ready = http.get("/readyz")
        alive = http.get("/healthz")

    # Then readiness says which four are down, without a password, and liveness is unaffected
    assert ready.status_code == 503, ready.text
    checks = ready.json()["checks"]
    assert {name: check["status"] for name, check in checks.items()} == dict.fromkeys(
        CHECK_NAMES, "down"
    )
    assert "pg-secret-91c2" not in ready.text
    assert "redis-secret-7f3a" not in ready.text
    assert alive.status_code == 200
    assert alive.json() == {"status": "ok"}


def test_readyz_is_bounded_when_dependencies_accept_but_never_answer(
    live_asgi_server_factory: Callable[..., LiveServer],
):
    # Given a port that completes the TCP handshake and then stays silent, named as every service
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        port = silent.getsockname()[1]
        server = live_asgi_server_factory(
            DATABASE_URL=f"postgres://app@127.0.0.1:{port}/silent",
            REDIS_URL=f"redis://127.0.0.1:{port}/0",
            CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/1",
        )

        response = httpx.get(f"{server.url}/readyz", timeout=CLIENT_TIMEOUT)

    # Then the probe still answers, each check cut short by its own bound
    assert response.status_code == 503, response.text
    checks = response.json()["checks"]
    assert {name: check["status"] for name, check in checks.items()} == dict.fromkeys(
        CHECK_NAMES, "down"
    )


def test_readyz_on_the_embedded_default_reports_inline_tasks(
    live_asgi_server_factory: Callable[..., LiveServer],
):
    # Given no Redis and no broker: local-memory cache, in-memory channel layer, inline tasks
    server = live_asgi_server_factory(REDIS_URL="", CELERY_BROKER_URL="")

    response = httpx.get(f"{server.url}/readyz", timeout=CLIENT_TIMEOUT)

    assert response.status_code == 200, response.text
    checks = response.json()["checks"]
    assert checks["broker"] == {**checks["broker"], "status": "ok", "detail": "inline"}
    assert checks["channel_layer"]["status"] == "ok"
    assert checks["cache"]["status"] == "ok"


PUBLIC_ADDRESS = "203.0.113.9"
DEAD_REDIS = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
    }
}


@pytest.mark.django_db
def test_readyz_tells_the_public_statuses_and_nothing_more(client, settings):
    # A finding of the source review: /readyz told anyone its dependencies' hosts and errors.
    settings.CACHES = DEAD_REDIS
    settings.METRICS_TOKEN = "metrics-token-for-tests"

    public = client.get("/readyz", REMOTE_ADDR=PUBLIC_ADDRESS)
    trusted = client.get("/readyz")  # loopback, as a probe on the same host
    with_token = client.get(
        "/readyz", REMOTE_ADDR=PUBLIC_ADDRESS, HTTP_AUTHORIZATION="Bearer metrics-token-for-tests"
    )

    assert public.status_code == 503
    assert public.json()["checks"]["cache"] == {"status": "down"}
    assert public.json()["checks"]["database"] == {"status": "ok"}
    assert "127.0.0.1" not in public.content.decode()
    assert trusted.json()["checks"]["cache"]["reason"]
    assert with_token.json()["checks"]["cache"]["reason"]


@pytest.mark.django_db
def test_readyz_runs_its_checks_at_most_once_in_its_window(client, settings):
    first = client.get("/readyz")  # checks run, results kept (the window is 0 in tests)
    settings.READINESS_CACHE_SECONDS = 60

    # When a dependency goes away within the window, the probe still shows the last results
    settings.CACHES = DEAD_REDIS
    within = client.get("/readyz")
    settings.READINESS_CACHE_SECONDS = 0
    after = client.get("/readyz")

    assert (first.status_code, within.status_code) == (200, 200)
    assert within.json() == first.json()
    assert after.status_code == 503


@pytest.mark.django_db
def test_the_root_says_where_things_are(client):
    # A first-hour finding: `/` was a 404 problem.
    response = client.get("/")

    assert response.status_code == 200
    body = response.json()
    for name in ("docs", "schema", "health", "readiness", "admin"):
        assert client.get(body[name]).status_code in (200, 302), name
    assert body["websocket"] == "/ws/v1/notifications/"
    assert_not_cacheable(response)
