"""OWASP API9:2023, improper inventory management.

The OpenAPI document served at /api/v1/schema/ is the inventory of the API. This module proves it
is complete and has nothing stale: every route of the URLconf under /api/v1/ (the documents
themselves aside) is a documented path, with every method the route answers, and every
documented path and method exists in the URLconf. An endpoint added without documentation, or
documentation of an endpoint that is gone, fails here.
"""

import re

import pytest
from django.urls import get_resolver
from rest_framework.test import APIClient

from tests.helpers import API
from tests.kernel import test_isolation_matrix as matrix

DOCUMENTS = {f"{API}/schema/", f"{API}/docs/", f"{API}/redoc/"}
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def shape(template: str) -> str:
    """A path with its parameters' names left out: `{pk}` and `{id}` name the same slot."""
    return re.sub(r"{[^}]+}", "{}", template)


def routed() -> dict[str, set[str]]:
    """Path shape -> the methods the URLconf answers on it."""
    found: dict[str, set[str]] = {}
    for template, pattern in matrix.walk_urlconf(get_resolver().url_patterns):
        template = "/" + template
        if not template.startswith(f"{API}/") or template in DOCUMENTS:
            continue
        view = getattr(pattern.callback, "cls", None)
        assert view is not None, f"{template} is not a class-based view"
        methods = set(matrix.route_methods(pattern.callback, view)) & HTTP_METHODS
        found.setdefault(shape(template), set()).update(methods)
    return found


# Read once for the module: generating the document is the slow part, and it needs no data.
@pytest.fixture(scope="module")
def documented() -> dict[str, set[str]]:
    response = APIClient().get(f"{API}/schema/", {"format": "json"})
    assert response.status_code == 200
    return {
        shape(path): set(operations) & HTTP_METHODS
        for path, operations in response.json()["paths"].items()
    }


def test_every_routed_path_is_documented(documented):
    missing = sorted(set(routed()) - set(documented))
    assert missing == []


def test_every_documented_path_is_routed(documented):
    stale = sorted(set(documented) - set(routed()))
    assert stale == []


def test_every_routed_method_is_documented_and_no_other(documented):
    mismatched = {
        path: {"routed": sorted(methods), "documented": sorted(documented.get(path, set()))}
        for path, methods in routed().items()
        if methods != documented.get(path, set())
    }
    assert mismatched == {}
