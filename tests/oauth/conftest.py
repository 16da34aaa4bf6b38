"""Apps registered through the API, and the dance against a live server."""

import httpx
import pytest
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from rest_framework.test import APIClient

from tests.factories import make_tenant
from tests.helpers import client_for, owner_of
from tests.oauth.flow import REDIRECT_URI, App

APPS = "/api/v1/oauth-apps/"
GRANTS = "/api/v1/oauth-grants/"
CATALOG_SCOPES = ["catalog.read", "catalog.write", "openid", "profile", "email", "offline_access"]


def registration(
    client, *, name="Shop front", scopes=CATALOG_SCOPES, confidential=True, redirect_uris=None
) -> tuple[dict, App]:
    """An app of the client's tenant, registered as its developers would: the API's answer, and
    the app as the dance knows it."""
    response = client.post(
        APPS,
        {
            "name": name,
            "redirect_uris": redirect_uris or [REDIRECT_URI],
            "scopes": scopes,
            "confidential": confidential,
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    app = App(
        client_id=body["client_id"],
        client_secret=body.get("client_secret"),
        redirect_uri=body["redirect_uris"][0],
        scopes=body["scopes"],
    )
    return body, app


def register_app(client, **registered) -> App:
    """`registration`'s app alone."""
    return registration(client, **registered)[1]


def bearer(access_token: str) -> APIClient:
    """An API client sending an OAuth access token, as the app does."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token}")
    return client


@pytest.fixture
def shop():
    """A tenant, its owner, and the owner's API client."""
    tenant = make_tenant(name="Shop")
    owner = owner_of(tenant)
    return tenant, owner, client_for(owner, tenant)


@pytest.fixture
def wsgi_transport():
    """HTTP to the application in this process, through WSGI: no server, and the test's own
    database transaction (the `db` fixture will do)."""
    return httpx.WSGITransport(app=_keeping_the_test_connection(get_wsgi_application()))


def _keeping_the_test_connection(handler):
    """As Django's test client does: the request signals must not close the connection that
    holds the test's transaction."""

    def application(environ, start_response):
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            response = handler(environ, start_response)
            body = b"".join(response)
            response.close()
            return [body]
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)

    return application


@pytest.fixture
def visitor(wsgi_transport) -> httpx.Client:
    """A person's browser: its own cookies, requests to the application in this process."""
    return httpx.Client(base_url="http://testserver", transport=wsgi_transport)
