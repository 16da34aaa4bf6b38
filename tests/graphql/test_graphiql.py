"""GraphiQL: served with DEBUG only, with everything it loads from this service itself."""

import re

import pytest
from django.contrib.staticfiles import finders

from tests.graphql.conftest import GRAPHQL_URL

pytestmark = pytest.mark.django_db


def test_with_debug_a_browser_gets_graphiql_loading_nothing_from_elsewhere(api_client, settings):
    settings.DEBUG = True

    response = api_client.get(GRAPHQL_URL, HTTP_ACCEPT="text/html,application/xhtml+xml")

    assert response.status_code == 200
    page = response.content.decode()
    assert "<title>GraphiQL" in page
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert len(sources) == 4  # the stylesheet, React, ReactDOM, GraphiQL
    for source in sources:
        assert source.startswith("/static/graphql_api/graphiql/"), source
        assert finders.find(source.removeprefix("/static/")) is not None, source
    assert "://" not in page


def test_without_debug_there_is_no_graphiql_only_the_api_asking_for_a_credential(
    api_client, settings
):
    settings.DEBUG = False

    response = api_client.get(GRAPHQL_URL, HTTP_ACCEPT="text/html")

    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
