"""The OpenAPI 3.1 document and its two viewers, which must work with no internet."""

import json
import os
import subprocess
import sys
from html.parser import HTMLParser

import httpx
import pytest
from django.conf import settings
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from tests.fixtures.servers import LiveServer

DOC_PAGES = ["/api/v1/docs/", "/api/v1/redoc/"]


class AssetCollector(HTMLParser):
    """The URLs a page makes the browser load: scripts, stylesheets, icons, preconnects."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script" and attributes.get("src"):
            self.urls.append(attributes["src"])
        elif tag == "link" and attributes.get("href"):
            self.urls.append(attributes["href"])


def page_assets(html: str) -> list[str]:
    collector = AssetCollector()
    collector.feed(html)
    return collector.urls


def is_local(url: str) -> bool:
    # A protocol-relative //host/... is as remote as https://host/...
    return url.startswith("/") and not url.startswith("//")


def test_schema_generates_without_a_single_warning(tmp_path):
    # drf-spectacular's own command: --fail-on-warn exits non-zero on any warning or error it
    # emits while generating (unguessable serializers, type hints it cannot resolve, ...), and
    # --validate checks the result against the OpenAPI JSON schema.
    schema_path = tmp_path / "schema.json"
    command = [
        sys.executable, "manage.py", "spectacular",
        "--validate", "--fail-on-warn",
        "--format", "openapi-json",
        "--file", str(schema_path),
    ]  # fmt: skip
    result = subprocess.run(
        command,
        cwd=settings.BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(schema_path.read_text())["openapi"] == "3.1.0"


def test_served_schema_is_valid_openapi_3_1(live_asgi_server: LiveServer):
    response = httpx.get(f"{live_asgi_server.url}/api/v1/schema/?format=json", timeout=30)

    assert response.status_code == 200, response.text
    spec = response.json()
    assert spec["openapi"] == "3.1.0"
    validate(spec, cls=OpenAPIV31SpecValidator)


@pytest.mark.parametrize("page", DOC_PAGES)
def test_doc_pages_and_their_assets_are_served(live_asgi_server: LiveServer, page):
    with httpx.Client(base_url=live_asgi_server.url, timeout=30) as http:
        response = http.get(page)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/html")
        local_assets = [url for url in page_assets(response.text) if is_local(url)]
        assert any(url.endswith(".js") for url in local_assets)

        for url in local_assets:
            assert http.get(url).status_code == 200, url


@pytest.mark.parametrize("page", ["/api/v1/docs/", "/api/v1/redoc/"])
def test_doc_pages_load_nothing_from_other_hosts(client, page):
    response = client.get(page)

    assert response.status_code == 200
    external = [url for url in page_assets(response.content.decode()) if not is_local(url)]
    assert external == []
