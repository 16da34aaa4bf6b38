"""Rate limits on the API: per tenant, per credential, across processes, and with Redis down.

Through HTTP against the real Redis. Limits are counted, never timed: the plans here refill one
token a minute, so that nothing a test does can be undone by the clock unless it runs for a
minute, and the test that measures a refill rate bounds it by the time it measured.
"""

import math
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.test import Client
from rest_framework.test import APIClient

from kernel.tenancy.models import Plan, Role, Tenant
from tests.factories import DEFAULT_PASSWORD, make_member, make_tenant, make_user
from tests.helpers import API, ME, TOKEN, assert_problem, client_for, outcome, owner_of

RATE_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
ROLES = f"{API}/roles/"
TENANT = f"{API}/tenant/"
UNCHECKED_METRIC = "tenantapi_ratelimit_unchecked_total"


def make_plan(*, burst: int, per_minute: int = 1) -> Plan:
    with outcome():
        return Plan.objects.create(
            code=f"tiny-{uuid.uuid4().hex[:12]}",
            name="Tiny",
            requests_per_minute=per_minute,
            burst=burst,
        )


def tenant_on_plan(plan: Plan) -> Tenant:
    return make_tenant(plan_code=plan.code)


def rate_headers(response) -> tuple[int, int, int]:
    return tuple(int(response[name]) for name in RATE_HEADERS)


def assert_rate_limited(response) -> int:
    """A 429 problem with an integer Retry-After of at least a second; returns it."""
    assert_problem(response, 429, "rate-limited")
    retry_after = int(response["Retry-After"])
    assert retry_after >= 1
    assert int(response["RateLimit-Remaining"]) == 0
    return retry_after


# --- headers ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_every_api_response_carries_the_headers(api_client, settings):
    # Given a signed-in member, and a client with no credential
    tenant = make_tenant()
    member = client_for(owner_of(tenant), tenant)
    owner = owner_of(tenant)

    # When they get a success, a 404 of a tenant view, a 400, a 401, an unknown URL, a body
    # refused before any view, and the public sign-in answering 200 and 401
    responses = {
        "success": member.get(ME),
        "not found": member.get(f"{ROLES}{uuid.uuid4()}/"),
        "invalid": member.post(ROLES, {"name": ""}, format="json"),
        "no credential": api_client.get(ME),
        "unknown url": member.get(f"{API}/no-such-thing/"),
        "too large": member.generic(
            "POST",
            ROLES,
            "{}",
            content_type="application/json",
            CONTENT_LENGTH=str(settings.MAX_REQUEST_BODY_BYTES + 1),
        ),
        "sign-in": api_client.post(
            TOKEN, {"email": owner.email, "password": DEFAULT_PASSWORD}, format="json"
        ),
        "failed sign-in": api_client.post(
            TOKEN, {"email": owner.email, "password": "not it"}, format="json"
        ),
    }

    # Then every one states its limit, what is left and when it is back
    statuses = [r.status_code for r in responses.values()]
    assert statuses == [200, 404, 400, 401, 404, 413, 200, 401]
    for name, response in responses.items():
        limit, remaining, reset = rate_headers(response)
        assert 0 <= remaining <= limit, name
        assert reset >= 0, name
        assert "Retry-After" not in response, name
    # The member's bucket is its credential's share of the plan's burst
    with outcome():
        burst = Tenant.objects.get(pk=tenant.pk).plan.burst
    limit, remaining, _ = rate_headers(responses["success"])
    assert limit == math.ceil(burst * settings.RATELIMIT_CREDENTIAL_SHARE)
    assert remaining == limit - 1


@pytest.mark.django_db
def test_outside_the_api_there_are_no_rate_headers(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert not any(name in response for name in RATE_HEADERS)


# --- the tenant's bucket and the credential's ------------------------------------------------


@pytest.mark.django_db
def test_past_the_burst_requests_get_429_with_retry_after(settings):
    # Given a tenant on a plan with a burst of 3, and credentials that may use all of it
    settings.RATELIMIT_CREDENTIAL_SHARE = 1
    tenant = tenant_on_plan(make_plan(burst=3))
    member = client_for(owner_of(tenant), tenant)

    # When it sends five requests at once
    responses = [member.get(ME) for _ in range(5)]

    # Then three are served, counting down, and the rest are refused until a token is back
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429]
    assert [int(r["RateLimit-Remaining"]) for r in responses] == [2, 1, 0, 0, 0]
    assert all(int(r["RateLimit-Limit"]) == 3 for r in responses)
    for refused in responses[3:]:
        retry_after = assert_rate_limited(refused)
        # One token a minute: the next one is at most a minute away
        assert retry_after <= 60
        assert int(refused["RateLimit-Reset"]) >= retry_after


@pytest.mark.django_db
def test_members_of_one_tenant_share_its_bucket_and_other_tenants_do_not(settings):
    # Given two members of a tenant with a burst of 3, and a member of another such tenant
    settings.RATELIMIT_CREDENTIAL_SHARE = 1
    plan = make_plan(burst=3)
    tenant, other_tenant = tenant_on_plan(plan), tenant_on_plan(plan)
    first = client_for(owner_of(tenant), tenant)
    second = client_for(make_member(tenant, roles=["viewer"]).user, tenant)
    stranger = client_for(owner_of(other_tenant), other_tenant)

    # When the first uses two requests and the second one
    assert [first.get(ME).status_code for _ in range(2)] == [200, 200]
    assert second.get(ME).status_code == 200

    # Then the tenant's bucket is empty for both of them, and the other tenant's is full
    assert_rate_limited(second.get(ME))
    assert_rate_limited(first.get(ME))
    served = stranger.get(ME)
    assert served.status_code == 200
    assert rate_headers(served)[:2] == (3, 2)


@pytest.mark.django_db
def test_each_credential_may_use_only_its_share_of_the_tenant(settings):
    # Given a tenant with a burst of 4, of which each credential may use half
    settings.RATELIMIT_CREDENTIAL_SHARE = 0.5
    tenant = tenant_on_plan(make_plan(burst=4))
    greedy = client_for(owner_of(tenant), tenant)
    polite = client_for(make_member(tenant, roles=["viewer"]).user, tenant)
    late = client_for(make_member(tenant, roles=["viewer"]).user, tenant)

    # When one member sends six requests
    greedy_statuses = [greedy.get(ME).status_code for _ in range(6)]

    # Then it gets its two, and its refused requests took nothing from the tenant: another
    # member still gets the other two
    assert greedy_statuses == [200, 200, 429, 429, 429, 429]
    assert [polite.get(ME).status_code for _ in range(2)] == [200, 200]
    # and with the tenant's four used, a third member, whose own share is untouched, is refused
    refused = late.get(ME)
    assert_rate_limited(refused)
    assert "tenant" in refused.json()["detail"]


@pytest.mark.django_db
def test_an_api_key_has_its_own_share_of_its_tenant(settings):
    # Given a tenant with a burst of 6, of which each credential may use half, and an API key
    # its owner made
    settings.RATELIMIT_CREDENTIAL_SHARE = 0.5
    tenant = tenant_on_plan(make_plan(burst=6))
    owner = client_for(owner_of(tenant), tenant)
    created = owner.post(
        f"{API}/api-keys/", {"name": "ci", "permissions": ["members.read"]}, format="json"
    )
    assert created.status_code == 201, created.content
    machine = APIClient()
    machine.credentials(HTTP_AUTHORIZATION=f"Api-Key {created.json()['key']}")

    # When the owner uses up their share (the key's creation took one of their three)
    assert [owner.get(TENANT).status_code for _ in range(3)] == [200, 200, 429]

    # Then the key still has its own three, which are the tenant's last
    responses = [machine.get(TENANT) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert int(responses[0]["RateLimit-Remaining"]) == 2
    assert "tenant" in responses[3].json()["detail"]


@pytest.mark.django_db
def test_requests_without_a_credential_are_limited_per_address(api_client, settings):
    # Given a tiny allowance for requests that carry no valid credential
    settings.RATELIMIT_ANONYMOUS_RATE = (2, 3600)

    # When one address sends a request with no credential, one with a forged token and one to
    # an unknown URL
    here = {"REMOTE_ADDR": "192.0.2.10"}
    first = api_client.get(ME, **here)
    second = api_client.get(ME, HTTP_AUTHORIZATION="Bearer forged", **here)
    third = api_client.get(f"{API}/no-such-thing/", **here)

    # Then the first two are answered as usual and the third is refused; another address is not
    assert [first.status_code, second.status_code] == [401, 401]
    assert rate_headers(second)[:2] == (2, 0)
    assert_rate_limited(third)
    assert api_client.get(ME, REMOTE_ADDR="192.0.2.11").status_code == 401


# --- plans are data: the admin's changes apply at once -----------------------------------------


@pytest.fixture
def staff_client() -> Client:
    """An operator of their own (a staff superuser with a generated address, not the suite's
    `operator`), signed in to the admin."""
    operator = make_user(is_staff=True, is_superuser=True)
    client = Client()
    assert client.login(email=operator.email, password=DEFAULT_PASSWORD)
    return client


def hidden_inputs(page: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))


@pytest.mark.django_db
def test_moving_a_tenant_to_another_plan_in_the_admin_applies_at_once(
    staff_client, settings, django_capture_on_commit_callbacks
):
    # Given a member of a tenant on a burst-3 plan, whose principal (plan included) is cached
    settings.RATELIMIT_CREDENTIAL_SHARE = 1
    small, large = make_plan(burst=3), make_plan(burst=50)
    tenant = tenant_on_plan(small)
    member = client_for(owner_of(tenant), tenant)
    assert int(member.get(ME)["RateLimit-Limit"]) == 3

    # When an operator moves the tenant to the burst-50 plan in the admin
    url = f"/admin/tenants/tenant/{tenant.id}/change/"
    form = hidden_inputs(staff_client.get(url).content.decode())
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            url,
            {
                **form,
                "name": tenant.name,
                "slug": tenant.slug,
                "status": "active",
                "plan": str(large.pk),
                "settings": "{}",
            },
        )
    assert response.status_code == 302

    # Then the member's next request is limited by the new plan
    assert int(member.get(ME)["RateLimit-Limit"]) == 50


@pytest.mark.django_db
def test_editing_a_plan_in_the_admin_applies_to_its_tenants_at_once(
    staff_client, settings, django_capture_on_commit_callbacks
):
    # Given a member of a tenant on a burst-3 plan
    settings.RATELIMIT_CREDENTIAL_SHARE = 1
    plan = make_plan(burst=3)
    tenant = tenant_on_plan(plan)
    member = client_for(owner_of(tenant), tenant)
    assert int(member.get(ME)["RateLimit-Limit"]) == 3

    # When an operator raises the plan's burst to 7
    url = f"/admin/tenants/plan/{plan.pk}/change/"
    fields = {
        "code": plan.code,
        "name": plan.name,
        "requests_per_minute": plan.requests_per_minute,
        "burst": 7,
        "max_members": plan.max_members,
        "max_api_keys": plan.max_api_keys,
        "max_products": plan.max_products,
        "max_invitations_per_day": plan.max_invitations_per_day,
        "max_oauth_apps": plan.max_oauth_apps,
        "audit_retention_days": plan.audit_retention_days,
        "notification_retention_days": plan.notification_retention_days,
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(url, fields)
    assert response.status_code == 302

    # Then the tenant's next request has the new burst
    assert int(member.get(ME)["RateLimit-Limit"]) == 7


# --- several server processes, one Redis ---------------------------------------------------------


def sign_in_over_http(server_url: str, user, tenant) -> str:
    response = httpx.post(
        f"{server_url}{TOKEN}",
        json={"email": user.email, "password": DEFAULT_PASSWORD, "tenant": tenant.slug},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["access"]


@pytest.mark.django_db(transaction=True)
def test_a_concurrent_burst_through_two_processes_gets_exactly_the_bucket(
    live_asgi_server_factory,
):
    # Given a tenant whose plan allows a burst of 10 refilled at 1 a minute, two members, and
    # two server processes sharing the database and Redis
    burst, per_minute = 10, 1
    tenant = tenant_on_plan(make_plan(burst=burst, per_minute=per_minute))
    users = [owner_of(tenant), make_member(tenant, roles=["viewer"]).user]
    # Credentials may use the whole tenant: the tenant's bucket is the one under test.
    servers = [live_asgi_server_factory(RATELIMIT_CREDENTIAL_SHARE="1") for _ in range(2)]
    tokens = [sign_in_over_http(servers[0].url, user, tenant) for user in users]

    # When 40 requests are sent at once, spread over both servers and both members
    total = 40
    start = threading.Barrier(16)

    def send(index: int) -> httpx.Response:
        server = servers[index % 2]
        token = tokens[(index // 2) % 2]
        with httpx.Client(timeout=30) as http:
            if index < 16:
                start.wait(timeout=30)
            return http.get(f"{server.url}{ME}", headers={"Authorization": f"Bearer {token}"})

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(send, range(total)))
    elapsed = time.monotonic() - started

    # Then exactly the bucket is served (plus whatever refilled while they ran, a token a
    # minute) and every other request is a proper 429: none lost, none let through twice
    allowed = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(allowed) + len(refused) == total, sorted({r.status_code for r in responses})
    refilled = int(elapsed * per_minute / 60)
    assert burst <= len(allowed) <= burst + refilled
    for response in refused:
        assert response.headers["Content-Type"] == "application/problem+json"
        assert int(response.headers["Retry-After"]) >= 1
        assert response.headers["RateLimit-Remaining"] == "0"


# --- Redis down ----------------------------------------------------------------------------------


def metric_value(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.mark.django_db(transaction=True)
def test_with_redis_stopped_reads_are_served_and_the_failure_is_counted(
    live_asgi_server_factory, throwaway_redis
):
    # Given a server whose cache and limits use a Redis that then stops
    tenant = make_tenant()
    server = live_asgi_server_factory(REDIS_URL=throwaway_redis.url(0))
    token = sign_in_over_http(server.url, owner_of(tenant), tenant)
    headers = {"Authorization": f"Bearer {token}"}
    assert "RateLimit-Limit" in httpx.get(f"{server.url}{ME}", headers=headers).headers
    unknown = httpx.get(f"{server.url}{API}/no-such-thing/")
    assert unknown.status_code == 404
    assert "RateLimit-Limit" in unknown.headers
    throwaway_redis.stop()

    # When a member reads, several times
    reads = [httpx.get(f"{server.url}{ME}", headers=headers, timeout=30) for _ in range(5)]
    listed = httpx.get(f"{server.url}{ROLES}", headers=headers, timeout=30)

    # Then every read is served, unlimited, and no response is a 500
    assert [r.status_code for r in reads] == [200] * 5
    assert listed.status_code == 200
    assert all("RateLimit-Limit" not in r.headers for r in reads)
    # and the requests that went unchecked are counted, the outage logged, not once a request
    metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
    assert metric_value(metrics, UNCHECKED_METRIC, 'outcome="allowed"') >= 6
    assert metric_value(metrics, UNCHECKED_METRIC, 'outcome="refused"') == 0
    logged = server.log().count("ratelimit_backend_unavailable")
    assert 1 <= logged < 6


@pytest.mark.django_db(transaction=True)
def test_with_redis_stopped_writes_follow_the_fail_open_setting(
    live_asgi_server_factory, throwaway_redis
):
    # Given two servers on a Redis that then stops: one fails open for writes (the default),
    # the other closed
    tenant = make_tenant()
    open_server = live_asgi_server_factory(REDIS_URL=throwaway_redis.url(0))
    closed_server = live_asgi_server_factory(
        REDIS_URL=throwaway_redis.url(0), RATELIMIT_FAIL_OPEN_WRITES="false"
    )
    token = sign_in_over_http(open_server.url, owner_of(tenant), tenant)
    headers = {"Authorization": f"Bearer {token}"}
    throwaway_redis.stop()

    # When a member creates a role through each, and reads through each
    def create_role(server, name: str) -> httpx.Response:
        body = {"name": name, "permissions": []}
        return httpx.post(f"{server.url}{ROLES}", json=body, headers=headers, timeout=30)

    through_open = create_role(open_server, "made-while-open")
    through_closed = create_role(closed_server, "made-while-closed")

    # Then the first write is served, the second refused with a 503 problem, and reads go on
    assert through_open.status_code == 201, through_open.text
    assert through_closed.status_code == 503, through_closed.text
    assert through_closed.headers["Content-Type"] == "application/problem+json"
    assert through_closed.json()["type"].endswith("/service-unavailable")
    assert httpx.get(f"{closed_server.url}{ME}", headers=headers, timeout=30).status_code == 200
    metrics = httpx.get(f"{closed_server.url}/metrics", timeout=30).text
    assert metric_value(metrics, UNCHECKED_METRIC, 'outcome="refused"') == 1
    with outcome():
        names = set(Role.objects.filter(tenant=tenant).values_list("name", flat=True))
    assert "made-while-open" in names
    assert "made-while-closed" not in names


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("per_minute", "wait"), [(60, "retry in 1 second."), (20, "retry in 3 seconds.")]
)
def test_the_refusal_says_how_long_to_wait_in_proper_english(settings, per_minute, wait):
    # A first-hour finding: "retry in 1 seconds".
    settings.RATELIMIT_CREDENTIAL_SHARE = 1
    tenant = tenant_on_plan(make_plan(burst=1, per_minute=per_minute))
    member = client_for(owner_of(tenant), tenant)

    member.get(ME)
    refused = member.get(ME)

    assert_rate_limited(refused)
    assert refused.json()["detail"].endswith(wait), refused.json()["detail"]
