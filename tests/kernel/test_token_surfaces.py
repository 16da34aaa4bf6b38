"""The token-authenticated surfaces (the REST API, GraphQL) skip the browser's middleware that
they have no use for (a user read from a session, messages); the admin and the sign-in pages keep
all of it, CSRF checks included.

A browser signed in to the admin sends its session and CSRF cookies with every request to the
same host, API requests included: none of it may authenticate an API request, and none of it may
get in the way of one that carries its own credential.
"""

import pytest
from django.test import Client
from prometheus_client import REGISTRY

from tests.factories import DEFAULT_PASSWORD, make_tenant, make_user
from tests.helpers import API, ME, TOKEN, assert_problem, owner_of

pytestmark = pytest.mark.django_db

PRODUCTS = f"{API}/products/"


def operator_browser() -> Client:
    """A browser signed in to the admin: it holds a session cookie and a CSRF cookie."""
    operator = make_user(is_staff=True, is_superuser=True)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operator)
    browser.get("/admin/")  # the admin's pages set the CSRF cookie
    assert {"sessionid", "csrftoken"} <= set(browser.cookies)
    return browser


def bearer_token(browser: Client, tenant) -> str:
    owner = owner_of(tenant)
    response = browser.post(
        TOKEN,
        {"email": owner.email, "password": DEFAULT_PASSWORD, "tenant": tenant.slug},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    return response.json()["access"]


def test_an_api_write_with_its_token_needs_no_csrf_token_and_sets_no_cookie():
    # Given a browser signed in to the admin, with its cookies, and a tenant's token
    browser = operator_browser()
    tenant = make_tenant(name="Cookie Jar")
    token = bearer_token(browser, tenant)

    # When it creates a product through the API, with the token and without any CSRF token
    response = browser.post(
        PRODUCTS,
        {"sku": "JAR-1", "name": "Jar", "price": "3.50"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )

    # Then the write is done, and the answer neither sets nor varies on a cookie
    assert response.status_code == 201, response.content
    assert not response.cookies
    assert "Cookie" not in response.get("Vary", "")
    detail = browser.get(
        f"{PRODUCTS}{response.json()['id']}/", headers={"Authorization": f"Bearer {token}"}
    )
    assert detail.status_code == 200
    assert not detail.cookies


@pytest.mark.parametrize("path", [ME, PRODUCTS, "/graphql/"])
def test_an_admin_session_is_no_credential_on_the_token_surfaces(path):
    # Given a browser signed in to the admin as a superuser
    browser = operator_browser()

    # When it reads the API or queries GraphQL with its session cookie alone
    if path == "/graphql/":
        response = browser.post(
            path, {"query": "{ me { email } }"}, content_type="application/json"
        )
    else:
        response = browser.get(path)

    # Then it is not authenticated: the session counts for nothing there
    assert_problem(response, 401)


def test_the_admin_keeps_its_session_and_csrf_check():
    person = make_user(is_staff=True, is_superuser=True)
    browser = Client(enforce_csrf_checks=True)

    # A sign-in form posted without the CSRF token is refused
    refused = browser.post(
        "/admin/login/", {"username": person.email, "password": DEFAULT_PASSWORD}
    )
    assert refused.status_code == 403
    # With the token the login page gave, the person is signed in: a session cookie
    page = browser.get("/admin/login/")
    token = page.context["csrf_token"]
    signed_in = browser.post(
        "/admin/login/",
        {"username": person.email, "password": DEFAULT_PASSWORD, "csrfmiddlewaretoken": token},
    )
    assert signed_in.status_code == 302
    assert "sessionid" in signed_in.cookies
    assert browser.get("/admin/").status_code == 200


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_each_request_is_counted_and_timed_once_by_view_and_status():
    client = Client()
    labels = {"view": "healthz", "method": "GET"}
    requests_before = sample(
        "tenantapi_django_http_requests_total_by_view_transport_method_total",
        transport="http",
        **labels,
    )
    responses_before = sample(
        "tenantapi_django_http_responses_total_by_status_view_method_total", status="200", **labels
    )
    timed_before = sample(
        "tenantapi_django_http_requests_latency_seconds_by_view_method_count", **labels
    )

    for _ in range(3):
        assert client.get("/healthz").status_code == 200

    assert (
        sample(
            "tenantapi_django_http_requests_total_by_view_transport_method_total",
            transport="http",
            **labels,
        )
        == requests_before + 3
    )
    assert (
        sample(
            "tenantapi_django_http_responses_total_by_status_view_method_total",
            status="200",
            **labels,
        )
        == responses_before + 3
    )
    assert (
        sample("tenantapi_django_http_requests_latency_seconds_by_view_method_count", **labels)
        == timed_before + 3
    )
