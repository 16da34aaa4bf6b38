"""The demo seeding behind the README's run command: idempotent, and it prints how to sign in."""

import io
import re

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    return re.search(r"password (\S+)", out.getvalue()).group(1)


def test_the_demo_owner_signs_in_with_the_password_printed_last(api_client):
    first = seed()
    second = seed()  # a second run keeps one tenant and prints a fresh password
    assert first != second

    def sign_in(password):
        return api_client.post(
            "/api/v1/auth/token/",
            {"email": "demo@example.com", "password": password, "tenant": "demo"},
            format="json",
        )

    assert sign_in(second).status_code == 200
    assert sign_in(first).status_code == 401
    me = api_client.get(
        "/api/v1/auth/me/", HTTP_AUTHORIZATION=f"Bearer {sign_in(second).json()['access']}"
    ).json()
    assert me["tenant"]["slug"] == "demo"
    assert me["roles"] == ["owner"]


def test_a_demo_operator_is_made_and_the_first_request_to_try_is_printed(api_client, client):
    # A first-hour finding: the README's "try /admin/" ended at the sign-in page.
    out = io.StringIO()
    call_command("seed_demo", "--base-url", "http://localhost:9000", stdout=out)
    printed = out.getvalue()

    operator_password = re.search(r"operator@example.com / password (\S+)", printed).group(1)
    assert client.login(email="operator@example.com", password=operator_password)
    assert client.get("/admin/").status_code == 200
    curl = re.search(r'curl -H "Authorization: Bearer (\S+)" (\S+)', printed)
    assert curl.group(2) == "http://localhost:9000/api/v1/products/"
    response = api_client.get("/api/v1/products/", HTTP_AUTHORIZATION=f"Bearer {curl.group(1)}")
    assert response.status_code == 200
    assert "http://localhost:9000/api/v1/docs/" in printed
