"""Cached reads answered by several server processes at once: gunicorn with two sync workers, as
the API is deployed, on the test database and Redis, through HTTP.

Each process answers a hit from what it remembers: the values the hit checks, which Redis keeps
exact by pushing invalidations to every process that read them (kernel/tracked.py), and rate-limit
tokens leased from the shared buckets (kernel/ratelimit/). What must hold whichever process
answers: a write through one is seen by the very next read through the other; a signed-out
session is refused by both at once; and the two together admit exactly the credential's
allowance, not a request more.
"""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from django_redis import get_redis_connection

from kernel.tracked import connection_name
from tests.catalog_helpers import make_product
from tests.factories import DEFAULT_PASSWORD, make_tenant
from tests.fixtures.servers import LiveServer, server_environment, start_live_wsgi_server
from tests.helpers import API, member_with_role
from tests.kernel.test_ratelimit import make_plan, tenant_on_plan

pytestmark = pytest.mark.django_db(transaction=True)

PRODUCTS = f"{API}/products/"
# Enough requests at once that both workers take some: each sync worker serves one at a time.
AT_ONCE = 6


@pytest.fixture
def two_workers(transactional_db, tmp_path: Path) -> Iterator[LiveServer]:
    server = start_live_wsgi_server(tmp_path, server_environment(), workers=2)
    yield server
    server.stop()


def signed_in(server: LiveServer, tenant, role: str = "editor") -> tuple[httpx.Client, str]:
    """A client of a new member with that role, and its refresh token."""
    user = member_with_role(tenant, role)
    http = httpx.Client(base_url=server.url, timeout=20.0)
    response = http.post(
        f"{API}/auth/token/",
        json={"email": user.email, "password": DEFAULT_PASSWORD, "tenant": tenant.slug},
    )
    assert response.status_code == 200, response.text
    tokens = response.json()
    http.headers["Authorization"] = f"Bearer {tokens['access']}"
    return http, tokens["refresh"]


def get_at_once(http: httpx.Client, url: str, count: int = AT_ONCE) -> list[httpx.Response]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda _: http.get(url), range(count)))


def worker_pids(server: LiveServer) -> set[int]:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text()
    return {int(pid) for pid in children.split()}


def tracking_processes() -> set[int]:
    """The processes with a tracking connection open on Redis (kernel/tracked.py names them)."""
    prefix = connection_name(0).removesuffix("0")
    names = (client["name"] for client in get_redis_connection("default").client_list())
    return {int(name.removeprefix(prefix)) for name in names if name.startswith(prefix)}


def test_a_write_through_one_process_is_seen_by_the_next_read_through_the_other(two_workers):
    tenant = make_tenant(plan_code="pro")
    product = make_product(tenant, name="Version 0")
    http, _ = signed_in(two_workers, tenant)
    url = f"{PRODUCTS}{product.id}/"
    for version in range(1, 11):
        # Both processes hold the entry, and what names it, from hits.
        for response in get_at_once(http, url):
            assert response.json()["name"] == f"Version {version - 1}"
        patched = http.patch(
            url,
            json={"name": f"Version {version}"},
            headers={"If-Match": response.headers["ETag"]},
        )
        assert patched.status_code == 200, patched.text
        after = http.get(url)
        assert after.json()["name"] == f"Version {version}"
        assert after.headers["ETag"] == patched.headers["ETag"]
    # Both workers answered hits from what they tracked.
    assert worker_pids(two_workers) <= tracking_processes()


def test_a_signed_out_session_is_refused_by_every_process_at_once(two_workers):
    tenant = make_tenant(plan_code="pro")
    make_product(tenant)
    http, refresh = signed_in(two_workers, tenant, role="viewer")
    for _ in range(3):
        assert {response.status_code for response in get_at_once(http, PRODUCTS)} == {200}

    assert http.post(f"{API}/auth/logout/", json={"refresh": refresh}).status_code == 204

    assert {response.status_code for response in get_at_once(http, PRODUCTS, 12)} == {401}


def test_processes_together_admit_exactly_the_credentials_allowance(two_workers):
    # A credential's bucket holds half the tenant's burst (RATELIMIT_CREDENTIAL_SHARE) and refills
    # a token every two minutes: nothing comes back while the test runs.
    tenant = tenant_on_plan(make_plan(burst=80, per_minute=1))
    make_product(tenant)
    http, _ = signed_in(two_workers, tenant)
    admitted, refused_in_a_row = 0, 0
    while refused_in_a_row < 4 * AT_ONCE:
        for response in get_at_once(http, PRODUCTS):
            if response.status_code == 200:
                admitted += 1
                refused_in_a_row = 0
            else:
                assert response.status_code == 429, response.text
                refused_in_a_row += 1
    assert admitted == 40
    assert worker_pids(two_workers) <= tracking_processes()
