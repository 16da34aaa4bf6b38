"""The authorization pages in a real browser: headless Chromium against a live server process.

A person who belongs to two tenants opens an app's authorization URL, is sent to the sign-in
page, signs in, reads the consent page (the app, the tenant that registered it, each scope in
words), picks their other tenant, allows, and the browser lands on the app's redirect URI with a
code and the state; the code exchanged, the token acts in the tenant the person picked. On the way,
each page the browser shows is held to what a page of ours must be: never framed, no asset of
another host, no script, a label for every field, a language.

Debian's chromium and chromium-driver drive it, as for the admin's browser test (scripts/test
installs them when missing); without them this test fails rather than skips.
"""

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.select import Select

from oauth.scopes import all_scopes
from tests.factories import DEFAULT_PASSWORD, make_member, make_tenant
from tests.fixtures.browser import WAIT_SECONDS, screenshot_on_failure, wait
from tests.fixtures.servers import LOOPBACK, free_port
from tests.oauth.conftest import register_app
from tests.oauth.flow import Dance, pkce_pair

pytestmark = pytest.mark.django_db(transaction=True)

SCOPES = ["catalog.read", "openid", "profile"]


def assert_a_page_of_ours(driver: webdriver.Chrome, *, cookies: dict[str, str]) -> None:
    """What every page of the authorization server is, as the browser shows it: fetched again
    with the browser's cookies, it is never framed; it loads nothing from another host and runs
    no script; each field has a label; it says its language."""
    url = driver.current_url
    again = httpx.get(url, cookies=cookies, timeout=WAIT_SECONDS)
    assert again.status_code == driver_status(driver), again.text
    assert again.headers["X-Frame-Options"] == "DENY"
    assert driver.execute_script("return document.documentElement.lang") == "en"
    elsewhere = driver.execute_script(
        "const links = [...document.querySelectorAll('[src], [href], [action], [formaction]')]"
        "  .map(e => new URL(e.getAttribute('src') ?? e.getAttribute('href')"
        "    ?? e.getAttribute('action') ?? e.getAttribute('formaction'), document.baseURI));"
        "const loaded = performance.getEntriesByType('resource').map(r => new URL(r.name));"
        "return [...links, ...loaded].filter(u => u.host !== location.host).map(u => u.href);"
    )
    assert elsewhere == []
    assert driver.execute_script("return document.scripts.length") == 0
    unlabelled = driver.execute_script(
        "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
        "  .filter(e => e.labels.length === 0 || !e.labels[0].textContent.trim())"
        "  .map(e => e.name || e.id)"
    )
    assert unlabelled == []


def driver_status(driver: webdriver.Chrome) -> int:
    """The status the browser got for the page it shows (the Navigation Timing entry's)."""
    return driver.execute_script(
        "return performance.getEntriesByType('navigation')[0].responseStatus"
    )


def cookies_of(driver: webdriver.Chrome) -> dict[str, str]:
    return {cookie["name"]: cookie["value"] for cookie in driver.get_cookies()}


def test_a_person_of_two_tenants_authorizes_an_app_in_the_second_in_the_browser(
    browser, live_asgi_server, shop, tmp_path
):
    # Given a person who owns the app's tenant and is a member of a second one, and an app of
    # the first with a loopback redirect URI that nothing serves
    tenant, owner, owner_api = shop
    second = make_tenant(name="Second Works")
    make_member(second, user=owner, roles=("viewer",))
    callback = f"http://{LOOPBACK}:{free_port()}/callback"
    app = register_app(owner_api, scopes=SCOPES, redirect_uris=[callback])
    dance = Dance(live_asgi_server.url, app)
    verifier, challenge = pkce_pair()
    server = urlsplit(live_asgi_server.url)

    with screenshot_on_failure(browser, tmp_path):
        # When the person's browser opens the authorization URL, it is sent to sign in
        browser.get(
            live_asgi_server.url
            + dance.authorize_url(scope=" ".join(SCOPES), state="st-42", challenge=challenge)
        )
        wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "id_password")))
        assert urlsplit(browser.current_url).path == "/oauth/sign-in/"
        assert_a_page_of_ours(browser, cookies=cookies_of(browser))

        # ...signs in, and sees the consent page: the app, its tenant, each scope in words
        browser.find_element(By.ID, "id_username").send_keys(owner.email)
        browser.find_element(By.ID, "id_password").send_keys(DEFAULT_PASSWORD)
        browser.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
        wait(browser).until(
            expected_conditions.presence_of_element_located((By.ID, "authorizationForm"))
        )
        assert urlsplit(browser.current_url).path == "/oauth/authorize/"
        page = browser.find_element(By.TAG_NAME, "main").text
        assert "Shop front" in page
        assert f"an app registered by {tenant.name}" in page
        described = all_scopes()
        for scope in SCOPES:
            assert described[scope] in page
        assert_a_page_of_ours(browser, cookies=cookies_of(browser))

        # ...where the select offers both tenants, the app's own first chosen
        tenants = Select(browser.find_element(By.NAME, "tenant"))
        assert {option.text for option in tenants.options} == {tenant.name, second.name}
        assert tenants.first_selected_option.get_attribute("value") == str(tenant.id)

        # ...picks the second tenant and allows
        tenants.select_by_visible_text(second.name)
        browser.find_element(By.CSS_SELECTOR, 'button[name="allow"]').click()

        # Then the browser lands on the app's redirect URI with a code and the state
        wait(browser).until(lambda driver: driver.current_url.startswith(callback + "?"))
        landed = {
            key: values[0] for key, values in parse_qs(urlsplit(browser.current_url).query).items()
        }
    assert landed["state"] == "st-42"
    assert landed["code"]
    assert urlsplit(landed["iss"]).netloc == server.netloc

    # And the code exchanged, the token acts in the tenant the person picked
    answer = dance.exchange(landed["code"], verifier)
    assert answer.status_code == 200, answer.text
    tokens = answer.json()
    assert set(tokens["scope"].split()) == set(SCOPES)
    with httpx.Client(
        base_url=live_asgi_server.url,
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=WAIT_SECONDS,
    ) as api:
        acting_in = api.get("/api/v1/tenant/")
        assert acting_in.status_code == 200, acting_in.text
        assert acting_in.json()["id"] == str(second.id)


def test_the_error_page_is_a_page_of_ours_in_the_browser(browser, live_asgi_server, tmp_path):
    # An authorization request that cannot succeed (no such app) shows the error page, which
    # is held to the same rules as the others
    with screenshot_on_failure(browser, tmp_path):
        browser.get(f"{live_asgi_server.url}/oauth/authorize/?client_id=nobody&response_type=code")
        heading = wait(browser).until(
            expected_conditions.presence_of_element_located((By.TAG_NAME, "h1"))
        )
        assert heading.text == "Unknown app"
        assert driver_status(browser) == 400
        assert_a_page_of_ours(browser, cookies=cookies_of(browser))
