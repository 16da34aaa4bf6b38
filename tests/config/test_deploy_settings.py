"""Production settings: Django's deployment checklist passes, and secrets have no fallback."""

import os
import secrets
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from django.conf import settings

from tests.helpers import rsa_private_key_pem

# The OpenID Connect signing key a deployment sets; one for the whole module.
SIGNING_KEY = rsa_private_key_pem()


def manage(*args: str, **environment: str | None) -> subprocess.CompletedProcess:
    # Only what a deployment would set, so that nothing from the developer's shell (DEBUG, an
    # SSL redirect turned off) changes the verdict.
    base = {
        "PATH": os.environ.get("PATH", ""),
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DATABASE_URL": os.environ.get("DATABASE_URL", "postgres://app@127.0.0.1:5432/app"),
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/1"),
        "OIDC_RSA_PRIVATE_KEY": SIGNING_KEY,
        "MFA_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env={
            name: value
            for name, value in {**base, **environment}.items()
            if value is not None  # None: the deployment does not set it
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_passes_without_a_single_warning():
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="api.example.com",
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_does_fail_on_a_weak_secret():
    # The passing run above means something only if the same command can fail.
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        SECRET_KEY="short",
        ALLOWED_HOSTS="api.example.com",
    )

    assert result.returncode != 0
    assert "security.W009" in result.stderr


@pytest.mark.parametrize(
    ("missing", "present"),
    [
        ("SECRET_KEY", {"ALLOWED_HOSTS": "api.example.com"}),
        ("ALLOWED_HOSTS", {"SECRET_KEY": secrets.token_urlsafe(50)}),
        (
            "OIDC_RSA_PRIVATE_KEY",
            {
                "SECRET_KEY": secrets.token_urlsafe(50),
                "ALLOWED_HOSTS": "api.example.com",
                "OIDC_RSA_PRIVATE_KEY": None,
            },
        ),
        (
            "MFA_ENCRYPTION_KEYS",
            {
                "SECRET_KEY": secrets.token_urlsafe(50),
                "ALLOWED_HOSTS": "api.example.com",
                "MFA_ENCRYPTION_KEYS": None,
            },
        ),
    ],
)
def test_production_refuses_to_start_without_required_settings(missing, present):
    result = manage("check", **present)

    assert result.returncode != 0
    assert f"Set the {missing} environment variable" in result.stderr
