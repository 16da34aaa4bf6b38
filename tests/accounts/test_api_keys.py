"""API keys through HTTP: the secret shown once, what a key may do, and how fast it stops."""

import time
from datetime import timedelta

import httpx
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import apikeys
from accounts.models import ApiKey
from accounts.tasks import api_key_last_used_flush_task
from kernel.permissions import Perm
from kernel.tenancy.models import Tenant
from tests.factories import DEFAULT_PASSWORD, make_member, make_role, make_tenant, make_user
from tests.fixtures.logs import captured_logs
from tests.helpers import (
    API,
    ME,
    assert_not_found_for_every_method,
    assert_problem,
    client_for,
    error_fields,
    outcome,
    owner_of,
    tasks_run_inline,
)

pytestmark = [pytest.mark.django_db, pytest.mark.tenant(name="Acme", plan_code="pro")]

KEYS = f"{API}/api-keys/"
TENANT = f"{API}/tenant/"
MEMBERS = f"{API}/members/"
ROLES = f"{API}/roles/"
INVITATIONS = f"{API}/invitations/"
KEY_FIELDS = {"id", "name", "prefix", "permissions", "expires_at", "last_used_at", "created_at"}


def key_url(key_id) -> str:
    return f"{KEYS}{key_id}/"


def create_key(client: APIClient, permissions, *, name: str = "ci", **extra) -> dict:
    response = client.post(KEYS, {"name": name, "permissions": permissions, **extra})
    assert response.status_code == 201, response.content
    return response.json()


def key_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


def warmed(client: APIClient, url: str = TENANT) -> APIClient:
    """A key client whose look-up is cached: the first request learns the key's tenant, the
    second stores its snapshot."""
    for _ in range(2):
        assert client.get(url).status_code == 200
    return client


def stored_key(key_id) -> ApiKey:
    with outcome():
        return ApiKey.objects.get(pk=key_id)


def key_count(tenant) -> int:
    with outcome():
        return ApiKey.objects.filter(tenant=tenant).count()


# --- the secret, once --------------------------------------------------------------------------


def test_creation_shows_the_key_once_and_never_again(tenant, owner_client):
    # Given an owner
    # When they create a key, and then list it and read it back
    with captured_logs() as logs:
        created = owner_client.post(
            KEYS, {"name": "deploy bot", "permissions": [Perm.CATALOG_READ, Perm.MEMBERS_READ]}
        )
        body = created.json()
        key = body["key"]
        used = key_client(key).get(MEMBERS)
        listed = owner_client.get(KEYS)
        detail = owner_client.get(key_url(body["id"]))

    # Then the 201 carries the key, in its format, with the resource and a Location
    assert created.status_code == 201, created.content
    assert set(body) == KEY_FIELDS | {"key"}
    assert key.startswith(f"sk_live_{body['prefix']}_")
    assert len(key.split("_", 3)[3]) >= 43  # 32 random bytes, base64url
    assert body["permissions"] == [Perm.CATALOG_READ, Perm.MEMBERS_READ]
    assert body["last_used_at"] is None
    assert created["Location"].endswith(key_url(body["id"]))
    assert created["Cache-Control"] == "no-store"
    assert used.status_code == 200
    # And no later answer shows the key or its hash
    stored = stored_key(body["id"])
    for response in (listed, detail):
        assert response.status_code == 200
        assert key not in response.content.decode()
        assert stored.key_hash not in response.content.decode()
    assert set(detail.json()) == KEY_FIELDS
    assert [item["id"] for item in listed.json()["results"]] == [body["id"]]
    # And only a hash is stored, and nothing of the secret reaches the logs
    assert stored.key_hash != key
    assert key.split("_", 3)[3] not in stored.key_hash
    secret = key.split("_", 3)[3]
    assert logs.text, "the requests wrote no log lines at all"
    assert secret not in logs.text


def test_a_key_authenticates_as_its_tenant_with_its_permissions_only(tenant, owner_client):
    other = make_tenant(name="Other")
    key = create_key(owner_client, [Perm.MEMBERS_READ])["key"]
    client = key_client(key)

    me_tenant = client.get(TENANT)
    members = client.get(MEMBERS)
    create_role = client.post(ROLES, {"name": "x", "permissions": [Perm.MEMBERS_READ]})
    keys = client.get(KEYS)

    assert me_tenant.status_code == 200
    assert me_tenant.json()["id"] == str(tenant.id) != str(other.id)
    assert members.status_code == 200
    assert [m["user"]["email"] for m in members.json()["results"]] == [owner_of(tenant).email]
    assert_problem(create_role, 403, "permission-denied")
    assert_problem(keys, 403, "permission-denied")


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("get", KEYS, None),
        ("post", KEYS, {"name": "child", "permissions": [Perm.CATALOG_READ]}),
        ("post", ROLES, {"name": "ops", "permissions": [Perm.CATALOG_READ]}),
        ("post", INVITATIONS, {"email": "new@example.com", "roles": []}),
    ],
)
def test_a_key_cannot_manage_keys_members_or_roles_unless_granted(
    tenant, owner_client, method, url, body
):
    # Given a key with every permission but the ones that manage keys, members and roles
    managing = {Perm.APIKEYS_MANAGE, Perm.MEMBERS_MANAGE, Perm.ROLES_MANAGE}
    key = create_key(owner_client, sorted(set(Perm) - managing))["key"]

    response = getattr(key_client(key), method)(url, body, format="json")

    assert_problem(response, 403, "permission-denied")
    assert key_count(tenant) == 1


def test_a_member_cannot_be_changed_by_a_key_without_members_manage(tenant, owner_client):
    member = make_member(tenant, roles=["viewer"])
    key = create_key(owner_client, [Perm.MEMBERS_READ, Perm.ROLES_MANAGE])["key"]
    client = key_client(key)

    patch = client.patch(f"{MEMBERS}{member.pk}/", {"roles": []}, format="json")
    delete = client.delete(f"{MEMBERS}{member.pk}/")

    assert_problem(patch, 403, "permission-denied")
    assert_problem(delete, 403, "permission-denied")


def test_a_key_granted_the_managing_codes_uses_them_within_its_own(tenant, owner_client):
    # Given a key that may manage keys and roles, and read the catalog
    key = create_key(
        owner_client, [Perm.APIKEYS_MANAGE, Perm.ROLES_MANAGE, Perm.MEMBERS_READ, Perm.CATALOG_READ]
    )["key"]
    client = key_client(key)

    # When it creates a role and a key within its codes, and one beyond them
    role = client.post(ROLES, {"name": "readers", "permissions": [Perm.CATALOG_READ]})
    child = client.post(KEYS, {"name": "child", "permissions": [Perm.CATALOG_READ]})
    beyond = client.post(KEYS, {"name": "greedy", "permissions": [Perm.CATALOG_WRITE]})
    role_beyond = client.post(ROLES, {"name": "writers", "permissions": [Perm.CATALOG_WRITE]})

    # Then the first two are made; the others are refused
    assert role.status_code == 201, role.content
    assert child.status_code == 201, child.content
    assert_problem(beyond, 403, "permission-denied")
    assert_problem(role_beyond, 403, "permission-denied")
    assert key_count(tenant) == 2


def test_a_key_made_by_a_key_cannot_outlive_it(tenant, owner_client):
    expires = timezone.now() + timedelta(days=1)
    parent = create_key(
        owner_client, [Perm.APIKEYS_MANAGE, Perm.CATALOG_READ], expires_at=expires.isoformat()
    )
    client = key_client(parent["key"])

    inherited = client.post(KEYS, {"name": "child", "permissions": [Perm.CATALOG_READ]})
    later = client.post(
        KEYS,
        {
            "name": "later",
            "permissions": [Perm.CATALOG_READ],
            "expires_at": (expires + timedelta(days=1)).isoformat(),
        },
    )

    assert inherited.status_code == 201, inherited.content
    assert inherited.json()["expires_at"] == parent["expires_at"]
    assert error_fields(later) == {"expires_at"}


def test_permissions_beyond_the_creators_are_refused(tenant):
    # Given a member who manages keys and reads the catalog, and nothing more
    keymaster = make_role(tenant, permissions=[Perm.APIKEYS_MANAGE, Perm.CATALOG_READ])
    client = client_for(make_member(tenant, roles=[keymaster.name]).user, tenant)

    response = client.post(
        KEYS, {"name": "escalate", "permissions": [Perm.CATALOG_READ, Perm.CATALOG_WRITE]}
    )

    body = assert_problem(response, 403, "permission-denied")
    assert Perm.CATALOG_WRITE in body["detail"]
    assert key_count(tenant) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "permissions": ["catalog.fly"]}, "permissions"),
        ({"name": "x", "permissions": []}, "permissions"),
        ({"permissions": [Perm.CATALOG_READ]}, "name"),
        (
            {"name": "x", "permissions": [Perm.CATALOG_READ], "expires_at": "2001-01-01T00:00Z"},
            "expires_at",
        ),
        ({"name": "x", "permissions": [Perm.CATALOG_READ], "expires_at": "soon"}, "expires_at"),
    ],
)
def test_bad_input_is_a_field_error(tenant, owner_client, body, field):
    assert error_fields(owner_client.post(KEYS, body)) == {field}
    assert key_count(tenant) == 0


def test_mass_assignment_is_ignored(tenant, owner_client):
    other = make_tenant()
    past = "2001-01-01T00:00:00Z"

    body = create_key(
        owner_client,
        [Perm.CATALOG_READ],
        tenant=str(other.id),
        tenant_id=str(other.id),
        prefix="AAAAAAAAAAAA",
        key_hash="0" * 64,
        last_used_at=past,
        revoked_at=past,
        created_by=str(make_user().pk),
    )

    stored = stored_key(body["id"])
    assert stored.tenant_id == tenant.id
    assert stored.prefix == body["prefix"] != "AAAAAAAAAAAA"
    assert stored.key_hash != "0" * 64
    assert (stored.last_used_at, stored.revoked_at) == (None, None)
    assert stored.created_by_id == owner_of(tenant).pk
    assert key_client(body["key"]).get(TENANT).status_code == 200


def test_another_tenants_key_is_not_found(tenant, owner_client):
    other = make_tenant()
    foreign = create_key(client_for(owner_of(other), other), [Perm.CATALOG_READ])

    assert_not_found_for_every_method(owner_client, key_url(foreign["id"]), {"delete": None})
    assert stored_key(foreign["id"]).revoked_at is None
    assert [k["id"] for k in owner_client.get(KEYS).json()["results"]] == []


def test_keys_need_apikeys_manage(tenant, owner_client):
    key = create_key(owner_client, [Perm.CATALOG_READ])
    editor = client_for(make_member(tenant, roles=["editor"]).user, tenant)

    for response in (
        editor.get(KEYS),
        editor.get(key_url(key["id"])),
        editor.post(KEYS, {"name": "x", "permissions": [Perm.CATALOG_READ]}),
        editor.delete(key_url(key["id"])),
    ):
        assert_problem(response, 403, "permission-denied")
    assert_problem(APIClient().get(KEYS), 401, "not-authenticated")
    assert stored_key(key["id"]).revoked_at is None


# --- refusals: revoked, expired, wrong ---------------------------------------------------------


def test_a_revoked_key_is_refused_at_once_even_right_after_a_cached_success(
    tenant, owner_client, django_capture_on_commit_callbacks
):
    # Given a key whose look-up is cached
    created = create_key(owner_client, [Perm.MEMBERS_READ])
    client = warmed(key_client(created["key"]))

    # When it is revoked (and that commits)
    with django_capture_on_commit_callbacks(execute=True):
        revoked = owner_client.delete(key_url(created["id"]))

    # Then its very next request is a 401, and it is gone from the API but kept in the database
    assert revoked.status_code == 204
    response = client.get(TENANT)
    assert_problem(response, 401, "not-authenticated")
    assert response["WWW-Authenticate"]
    assert_problem(owner_client.get(key_url(created["id"])), 404, "not-found")
    assert_problem(owner_client.delete(key_url(created["id"])), 404, "not-found")
    assert owner_client.get(KEYS).json()["results"] == []
    assert stored_key(created["id"]).revoked_at is not None


def test_an_expired_key_is_refused_the_moment_it_expires(tenant, owner_client):
    # Given a key that expires in two seconds, used (and cached) before that
    expires_at = timezone.now() + timedelta(seconds=2)
    created = create_key(owner_client, [Perm.MEMBERS_READ], expires_at=expires_at.isoformat())
    client = warmed(key_client(created["key"]))

    # When that moment passes
    time.sleep(max(0.0, (expires_at - timezone.now()).total_seconds()) + 0.1)

    # Then it is refused, although nothing changed in the database or the cache
    assert_problem(client.get(TENANT), 401, "not-authenticated")
    # And it is still listed, expired, until someone revokes it
    assert [k["id"] for k in owner_client.get(KEYS).json()["results"]] == [created["id"]]


def test_every_wrong_key_gets_the_same_401(tenant, owner_client):
    key = create_key(owner_client, [Perm.MEMBERS_READ])["key"]
    prefix = key.split("_", 3)[2]
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    headers = [
        f"Api-Key {tampered}",
        f"Api-Key sk_live_{prefix}_",
        f"Api-Key sk_live_{'Z' * 12}_{key.split('_', 3)[3]}",
        "Api-Key sk_test_abc",
        "Api-Key",
        f"Api-Key {key} extra",
        "Api-Key not-a-key",
    ]

    bodies = []
    for header in headers:
        response = APIClient().get(TENANT, HTTP_AUTHORIZATION=header)
        body = assert_problem(response, 401, "not-authenticated")
        assert response["WWW-Authenticate"]
        bodies.append(body["detail"])

    assert len(set(bodies)) == 1


def test_a_suspended_tenants_key_gets_403_and_a_deleted_tenants_401(
    tenant, owner_client, django_capture_on_commit_callbacks
):
    key = create_key(owner_client, [Perm.MEMBERS_READ])["key"]
    client = warmed(key_client(key))

    with outcome(), django_capture_on_commit_callbacks(execute=True):
        from kernel import tenants as services

        services.tenant_set_status(tenant_ids=[tenant.id], status=Tenant.Status.SUSPENDED)
    assert_problem(client.get(TENANT), 403, "tenant-suspended")

    with outcome(), django_capture_on_commit_callbacks(execute=True):
        services.tenant_set_status(tenant_ids=[tenant.id], status=Tenant.Status.ACTIVE)
        Tenant.objects.filter(pk=tenant.pk).update(deleted_at=timezone.now())
        from kernel.principals import access_changed

        access_changed(tenant.id)
    assert_problem(client.get(TENANT), 401, "not-authenticated")


# --- what a key cannot be --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("get", ME, None),
        (
            "post",
            f"{API}/auth/password/change/",
            {"current_password": DEFAULT_PASSWORD, "new_password": "another good secret 99"},
        ),
    ],
)
def test_a_key_on_a_person_only_endpoint_is_a_clean_403(tenant, owner_client, method, url, body):
    key = create_key(owner_client, sorted(Perm))["key"]

    response = getattr(key_client(key), method)(url, body, format="json")

    problem = assert_problem(response, 403, "permission-denied")
    assert "API key" in problem["detail"]


def test_owner_only_rights_stay_with_people(tenant, owner_client):
    key = create_key(owner_client, sorted(Perm))["key"]

    response = key_client(key).delete(TENANT)

    assert_problem(response, 403, "permission-denied")
    with outcome():
        assert Tenant.objects.get(pk=tenant.pk).deleted_at is None


def test_a_key_with_members_manage_invites_with_no_inviter(tenant, owner_client):
    key = create_key(owner_client, [Perm.MEMBERS_MANAGE, Perm.MEMBERS_READ, Perm.CATALOG_READ])
    readers = make_role(tenant, name="readers", permissions=[Perm.CATALOG_READ])

    response = key_client(key["key"]).post(
        INVITATIONS, {"email": "invitee@example.com", "roles": [str(readers.pk)]}
    )

    assert response.status_code == 201, response.content
    assert response.json()["invited_by"] is None


# --- cost and last use -------------------------------------------------------------------------


def test_a_warm_key_costs_no_more_sql_than_a_warm_token(
    tenant, owner_client, django_assert_num_queries
):
    # Given a person's token and a key, each with its look-up cached
    warmed(owner_client)
    with CaptureQueriesContext(connection) as person:
        assert owner_client.get(TENANT).status_code == 200
    # Counted now: the next request empties the connection's query log.
    person_queries = len(person.captured_queries)
    key = create_key(owner_client, [Perm.MEMBERS_READ])
    client = warmed(key_client(key["key"]))

    # When the key is used again
    with (
        django_assert_num_queries(person_queries),
        CaptureQueriesContext(connection) as machine,
    ):
        response = client.get(TENANT)

    # Then it ran what the token's request runs (the request's savepoints), nothing about keys,
    # and wrote nothing: not even last_used_at
    assert response.status_code == 200
    statements = " ".join(query["sql"] for query in machine.captured_queries).lower()
    assert "accounts_apikey" not in statements
    assert "update" not in statements
    assert stored_key(key["id"]).last_used_at is None


def test_last_used_at_is_written_by_the_flush_job(tenant, owner_client):
    # Given a key used a few times
    before = timezone.now()
    key = create_key(owner_client, [Perm.MEMBERS_READ])
    client = key_client(key["key"])
    for _ in range(3):
        assert client.get(TENANT).status_code == 200
    unused = create_key(owner_client, [Perm.MEMBERS_READ], name="unused")
    assert stored_key(key["id"]).last_used_at is None

    # When the beat job runs
    with tasks_run_inline():
        api_key_last_used_flush_task.delay()

    # Then the key's last use is recorded, and shown; the unused one stays empty
    used_at = stored_key(key["id"]).last_used_at
    assert used_at is not None
    assert before <= used_at <= timezone.now()
    assert owner_client.get(key_url(key["id"])).json()["last_used_at"] is not None
    assert stored_key(unused["id"]).last_used_at is None


def test_the_format_is_parsed_strictly():
    new = apikeys.generate()

    assert apikeys.parse_prefix(new.key) == new.prefix
    assert apikeys.hash_matches(new.key, new.key_hash)
    assert not apikeys.hash_matches(new.key + "x", new.key_hash)
    for bad in ("", "sk_live_", f"sk_test_{new.prefix}_x", f"sk_live_{new.prefix}_", "sk_live_a_b"):
        assert apikeys.parse_prefix(bad) is None


# --- the admin ---------------------------------------------------------------------------------


def test_keys_are_read_only_in_the_admin_and_an_operator_can_revoke_one(
    tenant, owner_client, operator_client, django_capture_on_commit_callbacks
):
    created = create_key(owner_client, [Perm.MEMBERS_READ], name="billing sync")
    client = warmed(key_client(created["key"]))
    admin_url = "/admin/accounts/apikey/"

    page = operator_client.get(f"{admin_url}{created['id']}/change/")
    changelist = operator_client.get(admin_url)
    add = operator_client.get(f"{admin_url}add/")
    delete = operator_client.post(f"{admin_url}{created['id']}/delete/", {"post": "yes"})
    with django_capture_on_commit_callbacks(execute=True):
        action = operator_client.post(
            admin_url, {"action": "revoke", "_selected_action": [created["id"]]}
        )

    assert page.status_code == 200
    assert "billing sync" in changelist.content.decode()
    assert stored_key(created["id"]).key_hash not in page.content.decode()
    assert add.status_code == 403
    assert delete.status_code == 403
    assert action.status_code == 302
    assert stored_key(created["id"]).revoked_at is not None
    assert_problem(client.get(TENANT), 401, "not-authenticated")


# --- across processes --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_revocation_reaches_another_server_process_at_once(live_asgi_server):
    # Given a key, used through a server in another process, which caches its look-up
    tenant = make_tenant(name="Remote", plan_code="pro")
    owner = client_for(owner_of(tenant), tenant)
    created = create_key(owner, [Perm.MEMBERS_READ])
    headers = {"Authorization": f"Api-Key {created['key']}"}
    remote = f"{live_asgi_server.url}{TENANT}"
    for _ in range(2):
        assert httpx.get(remote, headers=headers, timeout=10).status_code == 200

    # When it is revoked here
    assert owner.delete(key_url(created["id"])).status_code == 204

    # Then that server refuses it on its next request, well inside the cache's lifetime
    response = httpx.get(remote, headers=headers, timeout=10)
    assert response.status_code == 401, response.text
