"""The operators' admin in a real browser: headless Chromium against a live server process.

An operator logs in, suspends a tenant with the changelist's "Suspend" action, sees the tenant
listed as suspended, and the tenant's token is refused from then on. Debian's chromium and
chromium-driver drive it (scripts/test installs them when missing); without them this test
fails rather than skips, so that CI never passes without having run it.
"""

import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.select import Select

from kernel.tenancy.models import Tenant
from tests.factories import DEFAULT_PASSWORD, make_tenant, make_user
from tests.fixtures.browser import WAIT_SECONDS, screenshot_on_failure, wait
from tests.fixtures.servers import LiveServer
from tests.helpers import ME, TOKEN, owner_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_server(live_asgi_server_factory: Callable[..., LiveServer]) -> LiveServer:
    return live_asgi_server_factory()


def row_of(driver: webdriver.Chrome, tenant: Tenant):
    checkbox = driver.find_element(
        By.CSS_SELECTOR, f'input[name="_selected_action"][value="{tenant.id}"]'
    )
    return checkbox.find_element(By.XPATH, "./ancestor::tr")


def access_token(http: httpx.Client, user, tenant: Tenant) -> str:
    response = http.post(
        TOKEN, json={"email": user.email, "password": DEFAULT_PASSWORD, "tenant": tenant.slug}
    )
    assert response.status_code == 200, response.text
    return response.json()["access"]


def test_an_operator_suspends_a_tenant_in_the_browser(browser, admin_server, tmp_path):
    # Given an operator, and two tenants whose owners hold valid tokens
    operator = make_user(email="operator@example.com", is_staff=True, is_superuser=True)
    alpha, beta = make_tenant(name="Alpha Browser Shop"), make_tenant(name="Beta Browser Works")
    with (
        httpx.Client(base_url=admin_server.url, timeout=WAIT_SECONDS) as http,
        screenshot_on_failure(browser, tmp_path),
    ):
        alpha_token = access_token(http, owner_of(alpha), alpha)
        beta_token = access_token(http, owner_of(beta), beta)
        assert http.get(ME, headers={"Authorization": f"Bearer {alpha_token}"}).status_code == 200

        # When the operator logs in to the admin
        sign_in_to_the_admin(browser, admin_server, operator)

        # ...opens the tenants list, selects Alpha and runs "Suspend"
        browser.get(f"{admin_server.url}/admin/tenants/tenant/")
        wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "result_list")))
        assert "Active" in row_of(browser, alpha).text
        row_of(browser, alpha).find_element(By.NAME, "_selected_action").click()
        Select(browser.find_element(By.NAME, "action")).select_by_value("suspend")
        browser.find_element(By.CSS_SELECTOR, 'button[name="index"]').click()

        # Then the page says so and lists Alpha as suspended, Beta still active
        message = wait(browser).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist"))
        )
        assert "1 tenant(s) suspended." in message.text
        assert "Suspended" in row_of(browser, alpha).text
        assert "Active" in row_of(browser, beta).text

        # And Alpha's token is refused from the next request on, Beta's is not
        refused = http.get(ME, headers={"Authorization": f"Bearer {alpha_token}"})
        assert refused.status_code == 403, refused.text
        assert refused.headers["Content-Type"] == "application/problem+json"
        assert refused.json()["type"].endswith("/tenant-suspended")
        assert http.get(ME, headers={"Authorization": f"Bearer {beta_token}"}).status_code == 200


def sign_in_to_the_admin(browser: webdriver.Chrome, server: LiveServer, operator) -> None:
    browser.get(f"{server.url}/admin/")
    wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "id_username")))
    browser.find_element(By.ID, "id_username").send_keys(operator.email)
    browser.find_element(By.ID, "id_password").send_keys(DEFAULT_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, 'input[type="submit"], button[type="submit"]').click()
    wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "user-tools")))


def screenshot(browser: webdriver.Chrome, path: Path) -> Path:
    """The page as the browser shows it at 1,280 px, kept with the test's files."""
    browser.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def overflows(browser: webdriver.Chrome, selector: str) -> list[str]:
    """The texts of the elements that the page cuts off (wider content than box)."""
    return browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)",
        selector,
    )


def test_the_tenant_page_and_the_audit_list_read_well(browser, admin_server, tmp_path):
    # First-hour findings: a raw uuid@uuid label above each member, a delete icon on the plan,
    # the audit list's actor column cut at 1,280 px, "Add" offered for blacklisted tokens.
    operator = make_user(
        email="a-rather-long-operator-address-for-the-audit-list@operations.example.com",
        is_staff=True,
        is_superuser=True,
    )
    tenant = make_tenant(name="Screenshot Shop")
    with screenshot_on_failure(browser, tmp_path):
        sign_in_to_the_admin(browser, admin_server, operator)

        browser.get(f"{admin_server.url}/admin/tenants/tenant/{tenant.id}/change/")
        wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "id_plan")))
        # An operator's change, so that the audit list holds the operator's long label
        browser.find_element(By.ID, "id_name").clear()
        browser.find_element(By.ID, "id_name").send_keys("Screenshot Shop Renamed")
        page = screenshot(browser, tmp_path / "tenant.png").stat().st_size
        members = browser.find_element(By.CSS_SELECTOR, "div.inline-group").text
        assert owner_of(tenant).email in members
        assert not re.search(r"[0-9a-f-]{36}@[0-9a-f-]{36}", members)
        assert browser.find_elements(By.ID, "delete_id_plan") == []
        browser.find_element(By.CSS_SELECTOR, 'input[name="_save"]').click()
        wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "result_list")))

        browser.get(f"{admin_server.url}/admin/tenants/auditevent/")
        wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "result_list")))
        listed = screenshot(browser, tmp_path / "audit.png").stat().st_size
        actors = browser.find_elements(By.CSS_SELECTOR, "td.field-actor")
        assert any("a-rather-long-operator" in cell.text for cell in actors)
        assert overflows(browser, "td.field-actor, th.column-actor") == []
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"
        )

        browser.get(f"{admin_server.url}/admin/token_blacklist/blacklistedtoken/")
        wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "changelist")))
        # Neither the page's own "Add" button nor the sidebar's "+" beside the model
        assert browser.find_elements(By.CSS_SELECTOR, ".object-tools a.addlink") == []
        assert (
            browser.find_elements(
                By.CSS_SELECTOR, "#nav-sidebar tr.model-blacklistedtoken a.addlink"
            )
            == []
        )
    assert page > 10_000
    assert listed > 10_000
