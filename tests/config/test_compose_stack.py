"""The API as docker-compose.yml serves it: gunicorn with the production settings and compose's
environment, over plain HTTP on the machine it runs on. An operator must be able to sign in to
the admin there, and its static files must be served (a first-hour finding)."""

import re
from pathlib import Path

import httpx
import pyotp
import pytest
import yaml
from cryptography.fernet import Fernet

from tests.factories import DEFAULT_PASSWORD, make_user
from tests.helpers import rsa_private_key_pem

pytestmark = pytest.mark.django_db(transaction=True)

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def compose_environment() -> dict[str, str]:
    """What compose gives every application process, but where its services live."""
    environment = yaml.safe_load(COMPOSE.read_text())["x-app"]["environment"]
    kept = {name: str(value) for name, value in environment.items()}
    for name in (
        "DATABASE_URL",
        "REDIS_URL",
        "CELERY_BROKER_URL",
        "SECRET_KEY",
        "OIDC_RSA_PRIVATE_KEY",
        "MFA_ENCRYPTION_KEYS",
        "METRICS_TOKEN",
    ):
        kept.pop(name)  # the test's services, and secrets of its own
    return {
        **kept,
        "SECRET_KEY": "compose-stack-test-secret-" + "x" * 40,
        "OIDC_RSA_PRIVATE_KEY": rsa_private_key_pem(),
        "MFA_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    }


def test_an_operator_signs_in_to_the_admin_over_http_and_static_files_are_served(
    live_wsgi_server_factory,
):
    make_user(email="ops@compose.example", is_staff=True, is_superuser=True)
    server = live_wsgi_server_factory(**{**compose_environment(), "ALLOWED_HOSTS": "127.0.0.1"})

    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=False) as http:
        form = http.get("/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
        signed_in = http.post(
            "/admin/login/?next=/admin/",
            data={
                "csrfmiddlewaretoken": token,
                "username": "ops@compose.example",
                "password": DEFAULT_PASSWORD,
            },
            headers={"Referer": f"{server.url}/admin/login/"},
        )
        # Production requires operators to have a second factor: set up on the first sign-in
        held = http.get("/admin/")
        setup = http.get("/admin/second-factor/")
        secret = re.search(r'id="secret">([A-Z2-7]{32})<', setup.text).group(1)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', setup.text).group(1)
        enabled = http.post(
            "/admin/second-factor/",
            data={"csrfmiddlewaretoken": token, "code": pyotp.TOTP(secret).now()},
            headers={"Referer": f"{server.url}/admin/second-factor/"},
        )
        index = http.get("/admin/")
        stylesheet = http.get("/static/admin/css/base.css")

    assert form.status_code == 200
    assert signed_in.status_code == 302, signed_in.text[:500]
    assert held.status_code == 302
    assert held.headers["location"] == "/admin/second-factor/"
    assert "<svg" in setup.text
    assert enabled.status_code == 200
    assert "recovery codes" in enabled.text
    assert index.status_code == 200
    assert "Site administration" in index.text or "Tenant API operations" in index.text
    assert stylesheet.status_code == 200
