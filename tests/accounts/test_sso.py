"""Single sign-on with a tenant's own OpenID Connect provider, against a real provider
(oidc-provider-mock, served on loopback: tests/accounts/sso_helpers.py).

The owner connects the provider (`PUT /api/v1/tenant/sso/`); a person goes to
`/auth/sso/{tenant}/start/`, signs in at the provider, comes back to the callback, and the front
end exchanges the one-time code for tokens. Every way the provider's answer can be wrong (state,
nonce, signature, expiry, unverified or foreign email, a provider that is down) signs nobody in
and creates nothing.
"""

import io
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from rest_framework.test import APIClient

from accounts.models import SsoConnection, SsoIdentity
from accounts.sso.services import client_secret_of
from kernel.tenancy.models import AuditEvent, Membership, Plan, Role
from tests.accounts.test_mfa_required import app_token_of
from tests.factories import make_member, make_tenant, make_user
from tests.helpers import (
    API,
    ME,
    REFRESH,
    assert_problem,
    client_for,
    error_fields,
    member_with_role,
    outcome,
    owner_of,
)
from tests.oauth.conftest import registration, wsgi_transport  # noqa: F401 (a fixture)
from tests.oauth.flow import in_process

from .mfa_helpers import TOTP, activate, bearer_client, code_step, password_step
from .sso_helpers import (
    CLIENT_SECRET,
    DOMAIN,
    FRONT_END,
    TENANT_SSO,
    ResigningProxy,
    SsoBrowser,
    configure,
    expiring_provider,
    front_end_params,
    provider,
    redeem,
    start_url,
)

pytestmark = [pytest.mark.django_db, pytest.mark.tenant(plan_code="pro")]

FAILED = "sso-failed"
DOWN = "identity-provider-unavailable"
NEWCOMER = f"newcomer@{DOMAIN}"


@pytest.fixture(autouse=True)
def loopback_issuers(settings):
    # The provider runs on loopback, over http: only SSO_ALLOW_INSECURE_ISSUERS admits it.
    settings.SSO_ALLOW_INSECURE_ISSUERS = True


@pytest.fixture
def idp():
    with provider() as running:
        yield running


@pytest.fixture
def owner(tenant) -> APIClient:
    return client_for(owner_of(tenant), tenant)


@pytest.fixture
def connected(tenant, owner, idp):
    """The tenant with the provider connected (acme.example, default role: viewer)."""
    response = configure(owner, idp.issuer)
    assert response.status_code == 200, response.content
    return tenant


def events(tenant, action: str) -> list[AuditEvent]:
    with outcome():
        return list(AuditEvent.objects.filter(tenant=tenant, action=action).order_by("created_at"))


def nobody_called(email: str, tenant) -> bool:
    """No link to the tenant's provider, and nobody of `email` a member of the tenant."""
    with outcome():
        return (
            not SsoIdentity.objects.filter(tenant=tenant).exists()
            and not Membership.objects.filter(tenant=tenant, user__email=email).exists()
        )


def me(tokens: dict) -> dict:
    response = bearer_client(tokens["access"]).get(ME)
    assert response.status_code == 200, response.content
    return response.json()


# --- the connection --------------------------------------------------------------------------


def test_the_owner_connects_the_provider_and_the_secret_is_never_shown(tenant, owner, idp):
    response = configure(owner, idp.issuer, domains=["ACME.example.", "other.example"])
    assert response.status_code == 200, response.content
    body = response.json()
    assert not any("secret" in key for key in body)
    assert body["domains"] == ["acme.example", "other.example"]
    assert body["callback_url"] == "http://testserver/api/v1/auth/sso/callback/"
    with outcome():
        viewer = Role.objects.get(tenant=tenant, name="viewer")
        stored = SsoConnection.objects.get(tenant=tenant)
    assert body["default_role"] == str(viewer.pk)
    assert CLIENT_SECRET not in stored.encrypted_client_secret
    assert owner.get(TENANT_SSO).json() == body

    # A change without the secret keeps it; the audit log says the secret changed, never what.
    assert configure(owner, idp.issuer, client_secret=None).status_code == 400
    kept = owner.put(
        TENANT_SSO,
        {**{k: v for k, v in body.items() if k in ("issuer", "client_id", "domains")},
         "redirect_uris": [FRONT_END], "enforced": True},
        format="json",
    )  # fmt: skip
    assert kept.status_code == 200, kept.content
    with outcome():
        assert SsoConnection.objects.get(tenant=tenant).encrypted_client_secret == (
            stored.encrypted_client_secret
        )
    rotated = configure(owner, idp.issuer, client_secret="a-new-secret-0123456789")
    assert rotated.status_code == 200
    [created] = events(tenant, "accounts.sso.configured")
    updates = events(tenant, "accounts.sso.updated")
    assert created.changes["issuer"] == [None, idp.issuer]
    assert updates[0].changes == {"enforced": [False, True]}
    assert updates[1].changes["client_secret"] == ["[REDACTED]", "[REDACTED]"]
    assert CLIENT_SECRET not in str([e.changes for e in [created, *updates]])


def test_only_an_owner_changes_it_and_other_tenants_see_nothing(tenant, idp):
    admin = client_for(member_with_role(tenant, "admin"), tenant)
    assert_problem(configure(admin, idp.issuer), 403, "permission-denied")
    viewer = client_for(member_with_role(tenant, "viewer"), tenant)
    assert_problem(configure(viewer, idp.issuer), 403, "permission-denied")
    owner = client_for(owner_of(tenant), tenant)
    assert configure(owner, idp.issuer).status_code == 200
    assert admin.get(TENANT_SSO).status_code == 200
    assert_problem(admin.delete(TENANT_SSO), 403, "permission-denied")

    other = make_tenant()
    other_owner = client_for(owner_of(other), other)
    assert_problem(other_owner.get(TENANT_SSO), 404, "not-found")
    with outcome():
        assert SsoConnection.objects.filter(tenant=tenant).count() == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"issuer": "http://idp.example.com"}, "issuer"),
        ({"issuer": "https://10.0.0.7/realms/acme"}, "issuer"),
        ({"issuer": "not a url"}, "issuer"),
        ({"client_id": ""}, "client_id"),
        ({"domains": []}, "domains"),
        ({"domains": ["not a domain"]}, "domains.0"),
        ({"domains": ["10.0.0.1"]}, "domains.0"),
        ({"domains": ["localhost"]}, "domains.0"),
        ({"redirect_uris": ["http://app.acme.example/done"]}, "redirect_uris.0"),
        ({"redirect_uris": ["https://app.acme.example/done#x"]}, "redirect_uris.0"),
        ({"redirect_uris": ["javascript:alert(1)"]}, "redirect_uris.0"),
        ({"enforced": "yes"}, "enforced"),
        ({"default_role": "3f1c1e1e-0000-4000-8000-000000000000"}, "default_role"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored(tenant, owner, idp, change, field):
    change = {"issuer": idp.issuer, **change}
    response = configure(owner, **change)
    assert_problem(response, 400, "validation-error")
    assert field in error_fields(response)
    with outcome():
        assert not SsoConnection.objects.filter(tenant=tenant).exists()


def test_the_first_configuration_needs_the_secret_and_the_owner_role_is_never_given(
    tenant, owner, idp
):
    response = configure(owner, idp.issuer, client_secret=None)
    assert "client_secret" in error_fields(assert_problem(response, 400) and response)
    with outcome():
        owner_role = Role.objects.get(tenant=tenant, name="owner")
        other_tenants_role = Role.objects.get(tenant=make_tenant(), name="viewer")
    for role in (owner_role, other_tenants_role):
        response = configure(owner, idp.issuer, default_role=str(role.pk))
        assert_problem(response, 400, "validation-error")
        assert "default_role" in error_fields(response)


def test_http_on_loopback_is_refused_without_the_development_switch(owner, idp, settings):
    settings.SSO_ALLOW_INSECURE_ISSUERS = False
    response = configure(owner, idp.issuer)
    assert_problem(response, 400, "validation-error")
    assert "issuer" in error_fields(response)


def test_an_issuer_that_is_not_the_one_its_discovery_names_is_refused(owner, idp):
    response = configure(owner, idp.issuer + "/")
    assert_problem(response, 400, "validation-error")
    assert "issuer" in error_fields(response)


def test_a_provider_that_is_down_when_it_is_configured_is_a_502_and_nothing_is_stored(
    tenant, owner
):
    with provider() as gone:
        issuer = gone.issuer
    body = assert_problem(configure(owner, issuer), 502, DOWN)
    assert "discovery" in body["detail"]
    with outcome():
        assert not SsoConnection.objects.filter(tenant=tenant).exists()


def test_the_owner_removes_it(connected, owner):
    assert owner.delete(TENANT_SSO).status_code == 204
    assert_problem(owner.get(TENANT_SSO), 404, "not-found")
    assert_problem(owner.delete(TENANT_SSO), 404, "not-found")
    assert len(events(connected, "accounts.sso.removed")) == 1
    started = SsoBrowser(connected).start()
    assert_problem(started, 404, "not-found")


# --- signing in ------------------------------------------------------------------------------


def test_a_new_person_of_the_domain_becomes_a_member_with_the_default_role(connected, idp):
    idp.set_user("sub-new", email=NEWCOMER, email_verified=True, name="New Comer")
    browser = SsoBrowser(connected)
    started = browser.start(state="keep-me")
    assert started.status_code == 302
    assert started["Location"].startswith(f"{idp.issuer}/oauth2/authorize?")
    for parameter in ("state=", "nonce=", "code_challenge=", "code_challenge_method=S256"):
        assert parameter in started["Location"]
    cookie = browser.client.cookies["sso_browser"]
    assert cookie["httponly"]
    assert cookie["samesite"] == "Lax"

    back = browser.callback(browser.at_provider("sub-new"))
    assert back.status_code == 302, back.content
    params = front_end_params(back)
    assert params["state"] == "front-end-state"
    tokens = redeem(browser.client, params["code"]).json()
    who = me(tokens)
    assert who["user"]["email"] == NEWCOMER
    assert who["user"]["name"] == "New Comer"
    assert who["tenant"]["id"] == str(connected.id)
    assert who["roles"] == ["viewer"]
    [provisioned] = events(connected, "accounts.sso.member_provisioned")
    assert provisioned.changes["roles"] == [None, ["viewer"]]

    # The code is spent; a second sign-in finds the same person, and makes nothing new.
    assert_problem(redeem(browser.client, params["code"]), 401, FAILED)
    again = SsoBrowser(connected).sign_in("sub-new")
    assert me(again)["user"]["id"] == who["user"]["id"]
    with outcome():
        assert Membership.objects.filter(tenant=connected, user__email=NEWCOMER).count() == 1
        assert SsoIdentity.objects.filter(tenant=connected).count() == 1
    assert len(events(connected, "accounts.sso.member_provisioned")) == 1


def test_a_member_is_linked_and_is_neither_asked_a_code_nor_held(connected, idp, owner):
    member = make_member(connected, roles=("editor",), email=f"ed@{DOMAIN}").user
    activate(client_for(member, connected))
    assert owner.patch(f"{API}/tenant/", {"require_mfa": True}, format="json").status_code == 200
    idp.set_user("sub-ed", email=member.email, email_verified=True)

    tokens = SsoBrowser(connected).sign_in("sub-ed")
    assert me(tokens)["roles"] == ["editor"]
    assert bearer_client(tokens["access"]).get(f"{API}/products/").status_code == 200
    # The provider's word holds in this tenant only: the account's own factor is not its to
    # change.
    assert_problem(bearer_client(tokens["access"]).delete(TOTP, {"code": "000000"}), 403)
    # The session refreshes as a single sign-on session.
    refreshed = APIClient().post(REFRESH, {"refresh": tokens["refresh"]}, format="json")
    assert refreshed.status_code == 200, refreshed.content


def test_a_session_begun_with_single_sign_on_cannot_set_up_a_second_factor(connected, idp):
    idp.set_user("sub-new", email=NEWCOMER, email_verified=True)
    tokens = SsoBrowser(connected).sign_in("sub-new")
    assert_problem(bearer_client(tokens["access"]).post(TOTP, format="json"), 403)
    assert bearer_client(tokens["access"]).get(f"{API}/auth/mfa/").status_code == 200


def test_the_subject_decides_who_it_is_not_an_email_given_to_somebody_else(connected, idp):
    idp.set_user("sub-first", email=NEWCOMER, email_verified=True)
    first = me(SsoBrowser(connected).sign_in("sub-first"))
    # The provider gives the address to another subject: it opens nobody's account.
    idp.set_user("sub-second", email=NEWCOMER, email_verified=True)
    browser = SsoBrowser(connected)
    body = assert_problem(browser.callback(browser.at_provider("sub-second")), 401, FAILED)
    assert "another subject" in body["detail"]
    # The first subject, under a new address of the domain, is still the first person.
    idp.set_user("sub-first", email=f"renamed@{DOMAIN}", email_verified=True)
    assert me(SsoBrowser(connected).sign_in("sub-first"))["user"]["id"] == first["user"]["id"]


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"email": NEWCOMER, "email_verified": False}, "verified"),
        ({"email": NEWCOMER}, "verified"),
        ({"email": NEWCOMER, "email_verified": "true"}, "verified"),
        ({"email": "someone@elsewhere.example", "email_verified": True}, "domain"),
        ({"email": f"someone@sub.{DOMAIN}", "email_verified": True}, "domain"),
    ],
)
def test_an_unverified_or_foreign_email_signs_nobody_in(connected, idp, claims, reason):
    idp.set_user("sub-x", **claims)
    browser = SsoBrowser(connected)
    body = assert_problem(browser.callback(browser.at_provider("sub-x")), 401, FAILED)
    assert reason in body["detail"]
    assert nobody_called(claims["email"], connected)


def test_an_account_made_elsewhere_is_not_taken_over(connected, idp):
    """Somebody with an account (a member of another tenant) is no member here: the tenant's
    provider saying it is them does not let the tenant in to their account."""
    outsider = make_user(email=f"outsider@{DOMAIN}")
    make_member(make_tenant(), user=outsider)
    idp.set_user("sub-out", email=outsider.email, email_verified=True)
    browser = SsoBrowser(connected)
    body = assert_problem(browser.callback(browser.at_provider("sub-out")), 401, FAILED)
    assert "invitation" in body["detail"]
    assert nobody_called(outsider.email, connected)


def test_a_tampered_or_replayed_state_or_another_browser_signs_nobody_in(connected, idp):
    idp.set_user("sub-new", email=NEWCOMER, email_verified=True)
    browser = SsoBrowser(connected)
    callback = browser.at_provider("sub-new")
    assert_problem(browser.callback(callback.replace("state=", "state=x")), 401, FAILED)
    # The same callback in another browser (a link sent to a victim): no cookie, no sign-in.
    assert_problem(APIClient().get(callback), 401, FAILED)
    assert nobody_called(NEWCOMER, connected)

    # A state comes back once.
    fresh = SsoBrowser(connected)
    callback = fresh.at_provider("sub-new")
    assert fresh.callback(callback).status_code == 302
    assert_problem(fresh.callback(callback), 401, FAILED)


def test_a_wrong_nonce_is_refused(connected, idp):
    idp.set_user("sub-new", email=NEWCOMER, email_verified=True)
    browser = SsoBrowser(connected)
    callback = browser.at_provider("sub-new", tamper=lambda p: p.update(nonce="not-ours"))
    body = assert_problem(browser.callback(callback), 401, FAILED)
    assert "nonce" in body["detail"]
    assert nobody_called(NEWCOMER, connected)


def test_an_id_token_signed_by_another_key_is_refused(tenant, owner, idp):
    with ResigningProxy(idp) as forger:
        assert configure(owner, forger.issuer).status_code == 200
        idp.set_user("sub-new", email=NEWCOMER, email_verified=True)
        browser = SsoBrowser(tenant)
        body = assert_problem(browser.callback(browser.at_provider("sub-new")), 401, FAILED)
    assert "ID token" in body["detail"]
    assert nobody_called(NEWCOMER, tenant)


def test_an_expired_id_token_is_refused(tenant, owner):
    with expiring_provider() as stale:
        assert configure(owner, stale.issuer).status_code == 200
        stale.set_user("sub-new", email=NEWCOMER, email_verified=True)
        browser = SsoBrowser(tenant)
        body = assert_problem(browser.callback(browser.at_provider("sub-new")), 401, FAILED)
    assert "exp" in body["detail"]
    assert nobody_called(NEWCOMER, tenant)


def test_the_provider_refusing_is_a_clear_401(connected, idp):
    browser = SsoBrowser(connected)
    back = urlsplit(browser.at_provider("sub-new"))
    state = parse_qs(back.query)["state"][0]
    denied = f"{back.path}?{urlencode({'state': state, 'error': 'access_denied'})}"
    body = assert_problem(browser.callback(denied), 401, FAILED)
    assert "access_denied" in body["detail"]


def test_a_provider_down_at_the_callback_is_a_502_and_nothing_is_half_created(tenant, owner):
    with provider() as going:
        assert configure(owner, going.issuer).status_code == 200
        going.set_user("sub-new", email=NEWCOMER, email_verified=True)
        browser = SsoBrowser(tenant)
        callback = browser.at_provider("sub-new")
    body = assert_problem(browser.callback(callback), 502, DOWN)
    assert body["detail"]
    assert nobody_called(NEWCOMER, tenant)
    with outcome():
        assert not AuditEvent.objects.filter(
            tenant=tenant, action="accounts.sso.member_provisioned"
        ).exists()


def test_a_provider_down_at_the_start_is_a_502(tenant, owner, settings):
    settings.SSO_DISCOVERY_SECONDS = 0  # nothing kept: the start asks the provider
    with provider() as going:
        assert configure(owner, going.issuer).status_code == 200
    assert_problem(SsoBrowser(tenant).start(), 502, DOWN)


def test_the_start_takes_only_a_registered_redirect_uri_of_a_tenant_with_sso(connected):
    response = SsoBrowser(connected).start(redirect_uri="https://evil.example/steal")
    assert_problem(response, 400, "validation-error")
    assert "redirect_uri" in error_fields(response)
    response = SsoBrowser(connected).start(state="x" * 513)
    assert "state" in error_fields(assert_problem(response, 400) and response)
    assert_problem(APIClient().get(start_url(make_tenant())), 404, "not-found")
    assert_problem(APIClient().get(f"{API}/auth/sso/no-such-tenant/start/"), 404, "not-found")


def test_a_code_that_is_not_ours_gets_nothing(connected):
    for code in ("", "x" * 129, "not-a-code"):
        response = redeem(APIClient(), code)
        assert response.status_code in (400, 401), response.content
        assert response["Content-Type"] == "application/problem+json"


def test_the_plan_bounds_the_members_a_first_sign_in_makes(connected, idp):
    with outcome():
        Plan.objects.filter(pk=connected.plan_id).update(
            max_members=Membership.objects.filter(tenant=connected).count()
        )
    idp.set_user("sub-new", email=NEWCOMER, email_verified=True)
    browser = SsoBrowser(connected)
    assert_problem(browser.callback(browser.at_provider("sub-new")), 403, "quota-exceeded")
    assert nobody_called(NEWCOMER, connected)


# --- passwords where single sign-on is enforced ----------------------------------------------


def test_enforced_single_sign_on_refuses_passwords_of_its_domains_but_an_owners(tenant, owner, idp):
    member = make_member(tenant, roles=("editor",), email=f"pat@{DOMAIN}").user
    outside = make_member(tenant, roles=("editor",), email="guest@partner.example").user
    before = password_step(member, tenant=tenant)
    assert before.status_code == 200
    assert configure(owner, idp.issuer, enforced=True).status_code == 200

    body = assert_problem(password_step(member, tenant=tenant), 403, "sso-required")
    assert f"/auth/sso/{tenant.slug}/start/" in body["detail"]
    # A session begun with the password before ends at its next refresh.
    refreshed = APIClient().post(REFRESH, {"refresh": before.json()["refresh"]}, format="json")
    assert_problem(refreshed, 403, "sso-required")
    # Somebody of another domain keeps the password.
    assert password_step(outside, tenant=tenant).status_code == 200

    # An owner of the domain keeps the break-glass path, recorded.
    boss = make_member(tenant, roles=("owner",), email=f"boss@{DOMAIN}").user
    assert password_step(boss, tenant=tenant).status_code == 200
    [glass] = events(tenant, "accounts.sso.break_glass_sign_in")
    assert glass.actor_id == boss.pk
    assert glass.changes == {"via": [None, "api"]}


def test_the_break_glass_sign_in_of_an_owner_with_a_second_factor_is_recorded_once(
    tenant, owner, idp
):
    boss = make_member(tenant, roles=("owner",), email=f"boss@{DOMAIN}").user
    app, _ = activate(client_for(boss, tenant))
    assert configure(owner, idp.issuer, enforced=True).status_code == 200
    first = password_step(boss, tenant=tenant)
    token = assert_problem(first, 401, "mfa-required")["mfa_token"]
    assert events(tenant, "accounts.sso.break_glass_sign_in") == []
    assert code_step(token, app.fresh_code()).status_code == 200
    assert len(events(tenant, "accounts.sso.break_glass_sign_in")) == 1


def test_rotating_the_keys_encrypts_the_client_secret_again(connected, settings):
    with outcome():
        before = SsoConnection.objects.get(tenant=connected).encrypted_client_secret
    settings.MFA_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), *settings.MFA_ENCRYPTION_KEYS]
    call_command("rotate_mfa_keys", stdout=io.StringIO())
    settings.MFA_ENCRYPTION_KEYS = settings.MFA_ENCRYPTION_KEYS[:1]
    with outcome():
        after = SsoConnection.objects.get(tenant=connected)
    assert after.encrypted_client_secret != before
    assert client_secret_of(after) == CLIENT_SECRET


def test_an_enforced_member_cannot_get_an_apps_token_with_the_password(
    tenant,
    owner,
    idp,
    wsgi_transport,  # noqa: F811 (the imported fixture)
):
    """The OAuth sign-in page checks a password: where the tenant enforces single sign-on, the
    consent for that tenant is refused to its people, and an owner's is the break-glass path."""
    scopes = "catalog.read openid profile"
    _, app = registration(owner, scopes=scopes.split())
    member = make_member(tenant, roles=("editor",), email=f"pat@{DOMAIN}").user
    boss = make_member(tenant, roles=("owner",), email=f"boss@{DOMAIN}").user
    assert configure(owner, idp.issuer, enforced=True).status_code == 200

    assert app_token_of(in_process(app, wsgi_transport), member.email, scopes) is None
    assert app_token_of(in_process(app, wsgi_transport), boss.email, scopes) is not None
    [glass] = events(tenant, "accounts.sso.break_glass_sign_in")
    assert glass.changes == {"via": [None, "oauth"]}
