"""A tenant that requires a second factor, through HTTP and the notifications socket.

The owner alone turns it on and off (`PATCH /api/v1/tenant/ {"require_mfa": ...}`). While it is
on, a person signed in with their own access token who has no TOTP is held: 403 problem
…/mfa-enrollment-required everywhere but `/auth/me/`, `/auth/mfa/…` and `/auth/logout/`, until
they enrol; the requirement is checked on every request, so the same token goes through once
they have. API keys are no person signing in, and an app's token was granted by a person who
signed in where the second factor is asked: neither is held, but a held member cannot grant an
app anything new.

Codes are computed with pyotp from the secret the API returned (tests/accounts/mfa_helpers.py).
"""

import json
import re
import threading
import uuid
from collections.abc import Iterator

import pytest
from django.test import TestCase
from django.urls import URLResolver, get_resolver
from rest_framework.test import APIClient
from websockets.sync.client import connect

from accounts.api import tenant as tenant_views
from catalog.models import Product
from kernel.permissions import Perm
from kernel.tenancy.models import AuditEvent, Tenant
from tests.catalog_helpers import PRODUCTS, product_body
from tests.factories import DEFAULT_PASSWORD, make_member, make_tenant
from tests.helpers import API, ME, assert_problem, error_fields, outcome, owner_of, sign_in
from tests.kernel.test_quotas import race
from tests.notifications.test_websocket_auth import closed_with, receive
from tests.oauth.conftest import registration, wsgi_transport  # noqa: F401 (a fixture)
from tests.oauth.flow import Dance, in_process, pkce_pair, redirect_params

from .mfa_helpers import (
    MFA,
    TOTP,
    Authenticator,
    activate,
    code_step,
    confirm,
    enroll,
    mfa_status,
    mfa_token_of,
    password_step,
)

pytestmark = [pytest.mark.django_db, pytest.mark.tenant(plan_code="pro")]

TENANT = f"{API}/tenant/"
MEMBERS = f"{API}/members/"
LOGOUT = f"{API}/auth/logout/"
API_KEYS = f"{API}/api-keys/"
GRAPHQL = "/graphql/"
PRODUCTS_COUNT = "{ products { totalCount } }"
HELD = "mfa-enrollment-required"

SOCKET = "/ws/v1/notifications/"


@pytest.fixture(autouse=True)
def _no_device_throttling(settings) -> None:
    # django-otp's throttling (a wait after each wrong code) is another defence, not this one's.
    settings.MFA_THROTTLE_FACTOR = 0


# --- helpers -----------------------------------------------------------------------------------


class CommittingClient(APIClient):
    """A client whose each request ends as in production, by its transaction's commit: what the
    request left for then runs (the test's own transaction never commits). That is when a
    change of access reaches the cached principals and the open sockets (kernel.principals)."""

    def request(self, **kwargs):
        with TestCase.captureOnCommitCallbacks(execute=True):
            return super().request(**kwargs)


def bearer(access: str) -> APIClient:
    client = CommittingClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def signed_in(user, tenant) -> tuple[APIClient, dict]:
    """A new client signed in as `user` in `tenant` with their password: it and its tokens."""
    client = CommittingClient()
    tokens = sign_in(client, user, tenant)
    return client, tokens


def signed_in_with_second_factor(user, tenant, app: Authenticator) -> APIClient:
    """A person whose TOTP is active, signed in the whole way: password, then a code."""
    response = code_step(mfa_token_of(user, tenant=tenant), app.fresh_code())
    assert response.status_code == 200, response.content
    return bearer(response.json()["access"])


def set_required(client: APIClient, value: bool) -> dict:
    """The owner's PATCH, which must succeed: the tenant as the API answers it."""
    response = client.patch(TENANT, {"require_mfa": value}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["require_mfa"] is value
    return response.json()


def required_in_database(tenant) -> bool:
    with outcome():
        return Tenant.objects.get(pk=tenant.pk).require_mfa


def tenant_updates(tenant) -> list[AuditEvent]:
    with outcome():
        return list(
            AuditEvent.objects.filter(
                tenant_id=tenant.id, action="tenants.tenant.updated"
            ).order_by("created_at")
        )


def product_exists(tenant, sku: str) -> bool:
    with outcome():
        return Product.objects.filter(tenant_id=tenant.id, sku=sku).exists()


def graphql(client: APIClient):
    return client.post(GRAPHQL, {"query": PRODUCTS_COUNT}, format="json")


def assert_held(response) -> dict:
    """403 problem+json …/mfa-enrollment-required (GraphQL's too: before any GraphQL runs)."""
    body = assert_problem(response, 403, HELD)
    assert "data" not in body, body
    return body


def is_held(response) -> bool:
    return (
        response.status_code == 403
        and response["Content-Type"] == "application/problem+json"
        and response.json()["type"].endswith(f"/{HELD}")
    )


def assert_through(client: APIClient) -> None:
    """Every endpoint the requirement guards answers the person as usual."""
    for _ in range(2):  # the second one can be a cached read
        response = client.get(PRODUCTS)
        assert response.status_code == 200, response.content
    assert client.get(MEMBERS).status_code == 200
    tenant = client.get(TENANT)
    assert tenant.status_code == 200, tenant.content
    counted = graphql(client)
    assert counted.status_code == 200, counted.content
    assert "errors" not in counted.json(), counted.json()
    assert isinstance(counted.json()["data"]["products"]["totalCount"], int)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def owner(tenant):
    return owner_of(tenant)


@pytest.fixture
def owner_client(owner, tenant) -> APIClient:
    """The owner, without any second factor, signed in with their password."""
    return signed_in(owner, tenant)[0]


@pytest.fixture
def admin_client(admin, tenant) -> APIClient:
    """A member holding the admin role (tenant.manage, not the owner's rights), signed in."""
    return signed_in(admin.user, tenant)[0]


@pytest.fixture
def enrolled_owner(owner_client) -> APIClient:
    """The owner, with TOTP active: their own signed-in client (not held when it is on)."""
    activate(owner_client)
    return owner_client


@pytest.fixture
def member(tenant):
    """A member holding the admin role, so that a 403 cannot be a missing permission."""
    return make_member(tenant, roles=["admin"]).user


@pytest.fixture
def member_client(member, tenant) -> APIClient:
    """`member`, without any second factor, signed in with their own access token."""
    return signed_in(member, tenant)[0]


# --- who turns it on and off -------------------------------------------------------------------


def test_the_owner_turns_it_on_and_off_and_the_change_is_audited(tenant, owner, enrolled_owner):
    # Given a tenant that does not require it, as everyone reads it
    assert enrolled_owner.get(TENANT).json()["require_mfa"] is False

    # When the owner turns it on
    set_required(enrolled_owner, True)

    # Then the tenant shows it, and the log says who changed what
    assert enrolled_owner.get(TENANT).json()["require_mfa"] is True
    assert required_in_database(tenant) is True
    (turned_on,) = tenant_updates(tenant)
    assert turned_on.changes == {"require_mfa": [False, True]}
    assert (turned_on.actor_type, turned_on.actor_id) == ("user", owner.pk)
    assert (turned_on.target_type, turned_on.target_id) == ("tenant", str(tenant.id))

    # And the owner turns it off again, audited the other way
    set_required(enrolled_owner, False)
    assert enrolled_owner.get(TENANT).json()["require_mfa"] is False
    assert required_in_database(tenant) is False
    assert [event.changes for event in tenant_updates(tenant)] == [
        {"require_mfa": [False, True]},
        {"require_mfa": [True, False]},
    ]


def test_an_admin_cannot_turn_it_on(tenant, admin_client, member_client):
    # When an admin (who holds tenant.manage) asks, alone or with a change they may make
    refused = admin_client.patch(TENANT, {"require_mfa": True}, format="json")
    mixed = admin_client.patch(TENANT, {"name": "Renamed", "require_mfa": True}, format="json")

    # Then 403, owner's business, and nothing changed, not even the name that came with it
    for response in (refused, mixed):
        body = assert_problem(response, 403, "permission-denied")
        assert body["detail"].startswith("Only"), body
        assert "owner" in body["detail"].lower(), body
    assert required_in_database(tenant) is False
    assert admin_client.get(TENANT).json()["name"] == tenant.name
    assert tenant_updates(tenant) == []
    # ...and nobody is held
    assert member_client.get(PRODUCTS).status_code == 200


def test_an_admin_cannot_turn_it_off(tenant, enrolled_owner, admin_client):
    # Given an admin with a second factor, in a tenant whose owner requires one
    activate(admin_client)
    set_required(enrolled_owner, True)

    # When the admin turns it off
    response = admin_client.patch(TENANT, {"require_mfa": False}, format="json")

    # Then 403, and it is still required
    assert_problem(response, 403, "permission-denied")
    assert required_in_database(tenant) is True
    assert admin_client.get(TENANT).json()["require_mfa"] is True


@pytest.mark.django_db(transaction=True)
def test_an_admin_racing_the_owner_cannot_turn_it_off(tenant, owner, admin, monkeypatch):
    # Given an admin with a second factor, whose request to turn the requirement off is
    # authenticated just before the owner's request turning it on commits
    owner_client, _ = signed_in(owner, tenant)
    admin_client, _ = signed_in(admin.user, tenant)
    activate(admin_client)
    admin_authenticated, owner_committed = threading.Event(), threading.Event()
    real_validated_input = tenant_views.validated_input

    def validated_input_after_the_owner(view, serializer_class, **kwargs):
        if view.request.auth.user.pk == admin.user.pk:
            admin_authenticated.set()
            owner_committed.wait(timeout=10)
        return real_validated_input(view, serializer_class, **kwargs)

    monkeypatch.setattr(tenant_views, "validated_input", validated_input_after_the_owner)

    def owner_turns_it_on():
        assert admin_authenticated.wait(timeout=10)
        try:
            return owner_client.patch(TENANT, {"require_mfa": True}, format="json")
        finally:
            owner_committed.set()

    # When both go through, each over its own connection
    admin_response, owner_response = race(
        lambda: admin_client.patch(TENANT, {"require_mfa": False}, format="json"),
        owner_turns_it_on,
    )

    # Then the owner's change stands: only the owner turns it off, whatever the admin's request
    # read of the tenant when it began
    assert owner_response.status_code == 200, owner_response
    assert_problem(admin_response, 403, "permission-denied")
    assert required_in_database(tenant) is True


@pytest.mark.parametrize("value", ["true", 1, 0, None, "yes", [], {}])
def test_anything_but_a_boolean_is_a_field_error(tenant, owner_client, value):
    response = owner_client.patch(TENANT, {"require_mfa": value}, format="json")

    assert error_fields(response) == {"require_mfa"}
    assert required_in_database(tenant) is False
    assert tenant_updates(tenant) == []


# --- who is held, and where --------------------------------------------------------------------


def test_a_member_without_a_second_factor_is_held_everywhere_but_their_account(
    tenant, member, owner_client
):
    # Given a member who works as usual (their reads cached, as a client's repeated ones are)
    client, tokens = signed_in(member, tenant)
    assert_through(client)

    # When the owner requires a second factor
    set_required(owner_client, True)

    # Then, with the same token, every endpoint but their account's says so
    assert_held(client.get(PRODUCTS))
    assert_held(client.get(PRODUCTS))  # a second time: no cached read slips past
    created = product_body()
    assert_held(client.post(PRODUCTS, created, format="json"))
    assert not product_exists(tenant, created["sku"])
    assert_held(client.get(MEMBERS))
    assert_held(client.get(TENANT))
    assert_held(client.patch(TENANT, {"name": "Renamed"}, format="json"))
    assert_held(client.get(API_KEYS))
    assert_held(graphql(client))
    assert_held(graphql(client))
    assert_held(client.get(GRAPHQL, {"query": PRODUCTS_COUNT}))

    # ...but they can read who they are, and their second factor's state
    me = client.get(ME)
    assert me.status_code == 200, me.content
    assert me.json()["user"]["email"] == member.email
    assert mfa_status(client) == {"totp": False, "recovery_codes_remaining": 0}
    # ...and sign out
    logout = client.post(LOGOUT, {"refresh": tokens["refresh"]}, format="json")
    assert logout.status_code == 204, logout.content


# Routes that take no credential (what they read is in the body, or nothing): not this check's.
PUBLIC_ROUTES = {
    f"{API}/auth/signup/",
    f"{API}/auth/token/",
    f"{API}/auth/token/refresh/",
    f"{API}/auth/token/mfa/",
    f"{API}/auth/token/sso/",
    f"{API}/auth/password/reset/",
    f"{API}/auth/password/reset/confirm/",
    f"{API}/invitations/accept/",
    f"{API}/schema/",
    f"{API}/docs/",
    f"{API}/redoc/",
}
# Single sign-on's start (per tenant slug) and callback: a browser's way, with no credential;
# an export's archive, by its signed link alone.
PUBLIC_PREFIXES = (f"{API}/auth/sso/", f"{API}/exports/")
# GraphQL's paths answer another method with 405 before they read any credential.
GRAPHQL_METHODS = {GRAPHQL: ("get", "post"), f"{GRAPHQL}schema.graphql": ("get",)}
# What a held person may still reach: their account, and setting up the second factor.
OPEN_TO_THE_HELD = {ME, LOGOUT, MFA, TOTP, f"{TOTP}confirm/", f"{MFA}recovery-codes/"}


def api_routes() -> Iterator[str]:
    """Every path of the URLconf under /api/v1/ and /graphql/, ids filled with new UUIDs: a
    route added later is checked without this test being told of it."""

    def walk(patterns, prefix: str) -> Iterator[str]:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern)

    for route in walk(get_resolver().url_patterns, "/"):
        path = route.replace("/^api/(?P<version>v1)/", f"{API}/")
        path = re.sub(r"<[^>]+>", lambda _: str(uuid.uuid4()), path)
        if path.startswith((f"{API}/", GRAPHQL)):
            yield path


def test_every_route_holds_a_person_without_a_second_factor(tenant, member, owner_client, settings):
    # Every request counts here, held or not: the rate limit is not what this test is about.
    settings.RATELIMIT_ENABLED = False
    set_required(owner_client, True)
    client, _ = signed_in(member, tenant)
    routes = list(api_routes())
    assert {PRODUCTS, TENANT, GRAPHQL, *OPEN_TO_THE_HELD} <= set(routes)

    wrong = []
    for path in routes:
        if path in PUBLIC_ROUTES or path.startswith(PUBLIC_PREFIXES):
            continue
        methods = GRAPHQL_METHODS.get(path, ("get", "post", "put", "patch", "delete"))
        for method in methods:
            response = getattr(client, method)(path, {}, format="json")
            if is_held(response) == (path in OPEN_TO_THE_HELD):
                wrong.append((method.upper(), path, response.status_code))

    assert wrong == [], wrong


def test_signing_in_while_it_is_required_gives_tokens_that_are_held(tenant, member, enrolled_owner):
    # Given a tenant that requires a second factor
    set_required(enrolled_owner, True)

    # When a member without one signs in with their password
    response = password_step(member, tenant=tenant)

    # Then they get tokens (they must be able to enrol), which reach their account only
    assert response.status_code == 200, response.content
    client = bearer(response.json()["access"])
    assert client.get(ME).status_code == 200
    assert_held(client.get(PRODUCTS))
    assert_held(graphql(client))


def test_the_owner_who_turns_it_on_without_a_second_factor_is_held_too(tenant, owner_client):
    # When the owner, who has no second factor, turns it on
    set_required(owner_client, True)

    # Then the change holds, and holds them too: even turning it off waits for their enrolment
    assert required_in_database(tenant) is True
    assert_held(owner_client.get(TENANT))
    assert_held(owner_client.get(PRODUCTS))
    assert_held(owner_client.patch(TENANT, {"require_mfa": False}, format="json"))
    assert required_in_database(tenant) is True
    assert owner_client.get(ME).status_code == 200

    # When they enrol, their same token goes through
    activate(owner_client)
    assert owner_client.get(TENANT).json()["require_mfa"] is True
    assert_through(owner_client)
    set_required(owner_client, False)


def test_enrolling_lets_the_same_token_through(tenant, member_client, enrolled_owner):
    # Given a member held since the owner required a second factor
    assert member_client.get(PRODUCTS).status_code == 200
    set_required(enrolled_owner, True)
    assert_held(member_client.get(PRODUCTS))

    # When they start enrolling: a secret, not yet confirmed, is no second factor
    app = Authenticator(enroll(member_client)["secret"])
    assert_held(member_client.get(PRODUCTS))
    assert_held(graphql(member_client))

    # When they confirm it with a code from their app
    confirmed = confirm(member_client, app.fresh_code())
    assert confirmed.status_code == 200, confirmed.content

    # Then their next request, with the same access token, goes through
    assert_through(member_client)
    created = member_client.post(PRODUCTS, product_body(), format="json")
    assert created.status_code == 201, created.content


def test_removing_the_second_factor_holds_them_again(tenant, member_client, enrolled_owner):
    # Given a member with a second factor, in a tenant that requires one
    app, _ = activate(member_client)
    set_required(enrolled_owner, True)
    assert member_client.get(PRODUCTS).status_code == 200

    # When they remove it
    removed = member_client.delete(TOTP, {"code": app.fresh_code()}, format="json")
    assert removed.status_code == 204, removed.content

    # Then they are held again, with the same token
    assert_held(member_client.get(PRODUCTS))
    assert_held(member_client.get(PRODUCTS))
    assert member_client.get(MFA).status_code == 200


def test_a_member_with_a_second_factor_is_unaffected(tenant, member, member_client, enrolled_owner):
    # Given a member whose TOTP is active, signed in the whole way
    app, _ = activate(member_client)
    client = signed_in_with_second_factor(member, tenant, app)

    # When the owner requires a second factor
    set_required(enrolled_owner, True)

    # Then they work as before
    assert_through(client)
    created = client.post(PRODUCTS, product_body(), format="json")
    assert created.status_code == 201, created.content


def test_an_api_key_is_unaffected(tenant, owner_client):
    # Given an API key of the tenant, in use
    made = owner_client.post(
        API_KEYS, {"name": "ci", "permissions": [Perm.CATALOG_READ]}, format="json"
    )
    assert made.status_code == 201, made.content
    key = CommittingClient()
    key.credentials(HTTP_AUTHORIZATION=f"Api-Key {made.json()['key']}")
    assert key.get(PRODUCTS).status_code == 200

    # When the owner requires a second factor (and is held themselves)
    set_required(owner_client, True)
    assert_held(owner_client.get(PRODUCTS))

    # Then the key, which is nobody signing in, reads as before, on REST and GraphQL
    for _ in range(2):
        response = key.get(PRODUCTS)
        assert response.status_code == 200, response.content
    counted = graphql(key)
    assert counted.status_code == 200, counted.content
    assert "errors" not in counted.json(), counted.json()


def test_an_oauth_apps_token_is_unaffected(
    tenant,
    owner,
    owner_client,
    wsgi_transport,  # noqa: F811 (the imported fixture)
):
    # Given an app the owner authorized
    scopes = ["catalog.read", "openid", "profile"]
    _, app = registration(owner_client, scopes=scopes)
    tokens = in_process(app, wsgi_transport).tokens(email=owner.email, scope=" ".join(scopes))
    token = bearer(tokens["access_token"])
    assert token.get(PRODUCTS).status_code == 200

    # When the owner requires a second factor (and is held themselves)
    set_required(owner_client, True)
    assert_held(owner_client.get(PRODUCTS))

    # Then the app's token reads as before
    for _ in range(2):
        response = token.get(PRODUCTS)
        assert response.status_code == 200, response.content


def app_token_of(dance: Dance, email: str, scope: str) -> str | None:
    """A person's whole authorization of the dance's app, for as long as the server lets it go
    on as it does for anyone: the app's access token at the end, or None where a step answered
    otherwise (a refusal, or a page other than the next step's)."""
    verifier, challenge = pkce_pair()
    first = dance.browser.get(dance.authorize_url(scope=scope, state="s1", challenge=challenge))
    if first.status_code != 302:
        return None
    signed_in = dance.sign_in(first, email, DEFAULT_PASSWORD)
    if signed_in.status_code != 302:
        return None
    consent = dance.browser.get(signed_in.headers["location"])
    if consent.status_code != 200 or "allow" not in consent.text.lower():
        return None
    decided = dance.decide(consent, allow=True)
    location = decided.headers.get("location", "")
    if decided.status_code != 302 or not location.startswith(dance.app.redirect_uri + "?"):
        return None
    params = redirect_params(decided, dance.app.redirect_uri)
    if "code" not in params:
        return None
    answer = dance.exchange(params["code"], verifier)
    return answer.json()["access_token"] if answer.status_code == 200 else None


def test_a_held_member_cannot_authorize_an_app_to_get_around_it(
    tenant,
    member,
    owner_client,
    wsgi_transport,  # noqa: F811 (the imported fixture)
):
    # Given an app of the tenant, which any member can authorize (as one did before)
    scopes = "catalog.read openid profile"
    _, app = registration(owner_client, scopes=scopes.split())
    earlier = make_member(tenant, roles=["admin"]).user
    earlier_token = app_token_of(in_process(app, wsgi_transport), earlier.email, scopes)
    assert earlier_token is not None
    assert bearer(earlier_token).get(PRODUCTS).status_code == 200

    # When the owner requires a second factor, and a member without one authorizes the app
    set_required(owner_client, True)
    token = app_token_of(in_process(app, wsgi_transport), member.email, scopes)

    # Then no app reads the tenant for them: the grant is refused, or its token is held
    if token is not None:
        assert_held(bearer(token).get(PRODUCTS))


def test_turning_it_off_lets_them_through_again(tenant, member_client, enrolled_owner):
    # Given a member held by the requirement
    set_required(enrolled_owner, True)
    assert_held(member_client.get(PRODUCTS))
    assert_held(graphql(member_client))

    # When the owner turns it off
    set_required(enrolled_owner, False)

    # Then the same token goes through again
    assert_through(member_client)


def test_the_persons_other_tenants_are_unaffected(tenant, member, owner_client):
    # Given a person who belongs to this tenant and to another that requires nothing
    other = make_tenant(plan_code="pro")
    make_member(other, roles=["admin"], user=member)
    here, _ = signed_in(member, tenant)
    there, _ = signed_in(member, other)
    bystander, _ = signed_in(owner_of(other), other)

    # When this tenant requires a second factor
    set_required(owner_client, True)

    # Then they are held here only
    assert_held(here.get(PRODUCTS))
    assert_through(there)
    assert_through(bystander)
    assert there.get(TENANT).json()["require_mfa"] is False


# --- the notifications socket ------------------------------------------------------------------


def socket_url(server, access: str) -> str:
    return f"{server.ws_url}{SOCKET}?token={access}"


@pytest.mark.django_db(transaction=True)
def test_turning_it_on_closes_the_sockets_of_members_without_a_second_factor(
    live_asgi_server, tenant, member
):
    # Given an owner and a member with TOTP, and a member without, each with a socket open
    owner_client, owner_tokens = signed_in(owner_of(tenant), tenant)
    activate(owner_client)
    _, held_tokens = signed_in(member, tenant)
    with (
        connect(socket_url(live_asgi_server, owner_tokens["access"])) as enrolled_socket,
        connect(socket_url(live_asgi_server, held_tokens["access"])) as held_socket,
    ):
        assert receive(enrolled_socket) == {"type": "authenticated"}
        assert receive(held_socket) == {"type": "authenticated"}

        # When the owner requires a second factor
        set_required(owner_client, True)

        # Then the socket of the member without one is closed with 4403, saying why
        code, messages = closed_with(held_socket)
        assert code == 4403
        assert messages[-1]["code"] == HELD, messages
        # ...and the other stays open
        enrolled_socket.send(json.dumps({"type": "ping"}))
        assert receive(enrolled_socket) == {"type": "pong"}


@pytest.mark.django_db(transaction=True)
def test_a_new_socket_of_a_held_member_is_refused_until_they_enrol(
    live_asgi_server, tenant, member
):
    # Given a tenant that requires a second factor, and a member without one
    owner_client, _ = signed_in(owner_of(tenant), tenant)
    activate(owner_client)
    set_required(owner_client, True)
    client, tokens = signed_in(member, tenant)

    # When they open a socket, with the token in the handshake or in an 'auth' message
    with connect(socket_url(live_asgi_server, tokens["access"])) as socket:
        code, messages = closed_with(socket)
    with connect(f"{live_asgi_server.ws_url}{SOCKET}") as socket:
        socket.send(json.dumps({"type": "auth", "token": tokens["access"]}))
        auth_code, auth_messages = closed_with(socket)

    # Then 4403, saying why, either way
    assert code == 4403
    assert messages[-1]["code"] == HELD, messages
    assert auth_code == 4403
    assert auth_messages[-1]["code"] == HELD, auth_messages

    # When they enrol, the same token opens one
    activate(client)
    with connect(socket_url(live_asgi_server, tokens["access"])) as socket:
        assert receive(socket) == {"type": "authenticated"}
        socket.send(json.dumps({"type": "ping"}))
        assert receive(socket) == {"type": "pong"}
