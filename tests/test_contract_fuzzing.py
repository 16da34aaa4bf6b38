"""Contract fuzzing: schemathesis against the live OpenAPI document of a real server process.

A uvicorn process serves the application on the test database. A tenant on the enterprise plan
(whose rate limits a fuzzing run does not reach) gets an owner and, through the API, a category
and a product, so that list, filter and detail operations have something to return. Then
schemathesis' CLI fetches the document the server serves and calls every operation in it, as that
owner, with data that fits the schema and data that does not, and checks each response:

- not_a_server_error: never a 5xx;
- status_code_conformance: only statuses the document declares for the operation;
- content_type_conformance: only the media types it declares;
- response_schema_conformance: the body matches the declared schema;
- negative_data_rejection: data that breaks the schema is refused with a 4xx.

The seed is fixed, so a run is repeatable. The number of examples per operation is
`FUZZ_EXAMPLES` (default below, sized for the suite's time budget); a longer run is
`FUZZ_EXAMPLES=500 scripts/test tests/test_contract_fuzzing.py`.

Operations that would end the run's own session are fuzzed apart, with a throwaway tenant and
token each (`ISOLATED`): see the reasons there.
"""

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.factories import DEFAULT_PASSWORD, make_tenant
from tests.fixtures.servers import LiveServer
from tests.helpers import owner_of

pytestmark = pytest.mark.django_db(transaction=True)

SCHEMA_PATH = "/api/v1/schema/?format=json"
SEED = 42
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
WORKERS = os.environ.get("FUZZ_WORKERS", "2")
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)
REQUEST_TIMEOUT = 30  # seconds; a request that takes longer is a hang, and fails the run

# (method, path) -> why the operation cannot share a run with the others. Each is fuzzed in a
# run of its own, against a tenant and a token made for it alone.
ISOLATED = {
    ("DELETE", "/api/v1/tenant/"): (
        "deletes the credential's tenant: the first success would end the run's tenant, and every "
        "later request would get 401 instead of exercising the operation"
    ),
    ("POST", "/api/v1/auth/logout/"): (
        "revokes the session of the refresh token it is given, and with it the access token the "
        "run authenticates with"
    ),
    ("POST", "/api/v1/auth/password/change/"): (
        "a success revokes every session of the user, the run's own included"
    ),
}


@pytest.fixture
def fuzz_server(live_asgi_server_factory, throwaway_redis) -> LiveServer:
    """The application with a broker of its own: nothing the fuzzer enqueues (webhook
    deliveries, imports) reaches another test's worker, and no task runs inline in the server
    (no delivery to a made-up webhook target holds a request up)."""
    return live_asgi_server_factory(
        CELERY_BROKER_URL=throwaway_redis.url(0),
        CELERY_TASK_ALWAYS_EAGER="false",
        # A long run outlasts the default 15 minutes of an access token.
        ACCESS_TOKEN_LIFETIME_MINUTES="240",
        # Under ASGI, connections are pooled (config/settings/base.py says why): with one
        # persistent connection per worker thread, thousands of requests exhaust PostgreSQL's
        # connections and every later request is a 503.
        DATABASE_POOL="true",
        DATABASE_POOL_MAX_SIZE="4",
    )


def sign_in_live(server: LiveServer, tenant) -> dict:
    owner = owner_of(tenant)
    response = httpx.post(
        f"{server.url}/api/v1/auth/token/",
        json={"email": owner.email, "password": DEFAULT_PASSWORD, "tenant": tenant.slug},
        timeout=REQUEST_TIMEOUT,
    )
    assert response.status_code == 200, response.text
    return response.json()


def seed_catalog(server: LiveServer, access: str) -> None:
    headers = {"Authorization": f"Bearer {access}"}
    category = httpx.post(
        f"{server.url}/api/v1/categories/",
        json={"name": "Fuzzing"},
        headers=headers,
        timeout=REQUEST_TIMEOUT,
    )
    assert category.status_code == 201, category.text
    product = httpx.post(
        f"{server.url}/api/v1/products/",
        json={
            "sku": "FUZZ-1",
            "name": "Fuzzed product",
            "price": "19.99",
            "currency": "EUR",
            "stock": 3,
            "category": category.json()["id"],
            "tags": ["fuzz"],
        },
        headers=headers,
        timeout=REQUEST_TIMEOUT,
    )
    assert product.status_code == 201, product.text


def live_operations(server: LiveServer) -> dict[tuple[str, str], str]:
    """(METHOD, path) -> operationId of every operation in the document the server serves."""
    response = httpx.get(f"{server.url}{SCHEMA_PATH}", timeout=REQUEST_TIMEOUT)
    assert response.status_code == 200, response.text
    document = response.json()
    return {
        (method.upper(), path): operation["operationId"]
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in {"get", "put", "post", "patch", "delete"}
    }


def run_schemathesis(
    server: LiveServer, access: str, report_dir: Path, filters: list[str]
) -> subprocess.CompletedProcess:
    command = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{server.url}{SCHEMA_PATH}",
        "--checks", ",".join(CHECKS),
        "--seed", str(SEED),
        "--max-examples", str(EXAMPLES),
        "--workers", WORKERS,
        "--header", f"Authorization: Bearer {access}",
        "--request-timeout", str(REQUEST_TIMEOUT),
        "--suppress-health-check", "all",
        "--report", "junit",
        "--report-dir", str(report_dir),
        "--no-color",
        "--generation-database", "none",
        *filters,
    ]  # fmt: skip
    environment = dict(os.environ, NO_COLOR="1", COLUMNS="120")
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=environment,
        cwd=report_dir,
        timeout=1800,
        check=False,
    )


def assert_clean(result: subprocess.CompletedProcess, server: LiveServer) -> None:
    # The summary of a passing run is in the test's output (`pytest -rP` shows it).
    summary_at = result.stdout.rfind("SUMMARY")
    print(result.stdout[summary_at:] if summary_at >= 0 else result.stdout)
    if result.returncode != 0:
        errors = [line for line in server.log().splitlines() if '"level": "error"' in line]
        pytest.fail(
            f"schemathesis found failures (exit {result.returncode}):\n"
            f"{result.stdout}\n{result.stderr[-3_000:]}\n"
            "errors in the server log:\n" + "\n".join(errors[-20:])
        )


def test_every_operation_holds_to_the_contract(fuzz_server, tmp_path):
    tenant = make_tenant(name="Fuzzing", plan_code="enterprise")
    access = sign_in_live(fuzz_server, tenant)["access"]
    seed_catalog(fuzz_server, access)

    operations = live_operations(fuzz_server)
    missing = set(ISOLATED) - set(operations)
    assert not missing, f"isolated operations no longer in the document: {missing}"
    excluded = [
        argument for key in ISOLATED for argument in ("--exclude-operation-id", operations[key])
    ]
    result = run_schemathesis(fuzz_server, access, tmp_path, excluded)
    assert_clean(result, fuzz_server)


@pytest.mark.parametrize("operation", sorted(ISOLATED), ids=lambda key: " ".join(key))
def test_session_ending_operations_hold_to_the_contract(fuzz_server, tmp_path, operation):
    tenant = make_tenant(plan_code="enterprise")
    access = sign_in_live(fuzz_server, tenant)["access"]

    operation_id = live_operations(fuzz_server)[operation]
    result = run_schemathesis(
        fuzz_server, access, tmp_path, ["--include-operation-id", operation_id]
    )
    assert_clean(result, fuzz_server)
