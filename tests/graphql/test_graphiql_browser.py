"""GraphiQL in a real browser (Debian's Chromium), served by a live server with DEBUG: it renders
with nothing but what this service serves, and runs a query with the credential typed in."""

import json

import pytest
from rest_framework.test import APIClient
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions

from tests.catalog_helpers import make_product
from tests.factories import make_tenant
from tests.fixtures.browser import screenshot_on_failure, wait
from tests.helpers import owner_of, sign_in

pytestmark = pytest.mark.django_db(transaction=True)

GRAPHIQL = (By.CSS_SELECTOR, ".graphiql-container")


def test_graphiql_renders_offline_and_runs_a_query(browser, live_asgi_server_factory, tmp_path):
    server = live_asgi_server_factory(DEBUG="true")
    tenant = make_tenant()
    make_product(tenant, sku="IN-THE-IDE")
    access = sign_in(APIClient(), owner_of(tenant), tenant)["access"]

    with screenshot_on_failure(browser, tmp_path):
        browser.get(server.url + "/graphql/")
        wait(browser).until(expected_conditions.presence_of_element_located(GRAPHIQL))
        requested = browser.execute_script(
            "return performance.getEntriesByType('resource').map(entry => entry.name)"
        )
        # Everything the page loaded came from the server itself
        assert requested, "the page loaded nothing"
        assert all(url.startswith(server.url) for url in requested), requested

        # The credential typed in the Headers tab, then the query run
        browser.execute_script(
            "window.localStorage.setItem('graphiql:headers', arguments[0]);",
            json.dumps({"Authorization": f"Bearer {access}"}),
        )
        browser.refresh()
        wait(browser).until(expected_conditions.presence_of_element_located(GRAPHIQL))
        run = browser.find_element(By.CSS_SELECTOR, ".graphiql-execute-button")
        run.click()
        wait(browser).until(
            expected_conditions.text_to_be_present_in_element(
                (By.CSS_SELECTOR, ".graphiql-response"), "IN-THE-IDE"
            )
        )
