"""Helpers of the GraphQL tests: a query through the public endpoint, as a client sends it."""

from typing import Any

import pytest
from rest_framework.test import APIClient

GRAPHQL_URL = "/graphql/"


def gql(client: APIClient, query: str, variables: dict[str, Any] | None = None, **extra: Any):
    """POST a GraphQL request; the response, with `.json()`."""
    body: dict[str, Any] = {"query": query}
    if variables is not None:
        body["variables"] = variables
    return client.post(GRAPHQL_URL, body, format="json", **extra)


def data_of(response) -> dict[str, Any]:
    """The `data` of a successful answer; fails with the errors otherwise."""
    assert response.status_code == 200, response.content
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def error_codes(response) -> list[str]:
    return [error["extensions"]["code"] for error in response.json().get("errors", [])]


@pytest.fixture
def graphql():
    return gql
