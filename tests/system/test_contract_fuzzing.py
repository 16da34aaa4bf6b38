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
`FUZZ_EXAMPLES=500 scripts/test tests/system/test_contract_fuzzing.py`.

Operations that take an object's id in their path would mostly get made-up ids, and answer 404,
without ever reaching what they do to a real object. The stateful phase chains those schemathesis
can link by itself (create a product, then read, change and delete it, through the ids its
responses carry); for the rest, the fixture creates the objects (an API key, an invitation, a
webhook endpoint with a delivery, an import job, a notification, members) and pins the path
parameters of their operations to them, in a schemathesis config file: every example of
`GET /webhooks/{id}/` reads a real endpoint, every `PUT` validates a change to it. An operation
that deletes gets an object of its own, so that its first success leaves the others theirs. The
test then checks, from the run's HAR report, that each of those operations got past 404.

Operations that would end the run's own session are fuzzed apart, with a throwaway tenant and
token each (`ISOLATED`): see the reasons there.
"""

import json
import os
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import pytest

from kernel.context import operator_scope
from notifications.models import Notification
from oauth import services as oauth_services
from oauth.models import App
from tests.factories import DEFAULT_PASSWORD, make_member, make_tenant
from tests.fixtures.servers import LiveServer
from tests.helpers import owner_of
from webhooks.models import WebhookDelivery

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
    ("PATCH", "/api/v1/tenant/"): (
        "a success may require a second factor of the tenant's members (`require_mfa`), which "
        "the run's owner has not set up: every later request would be 403"
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


# A public address written as a literal: a webhook endpoint is accepted without a DNS lookup.
WEBHOOK_URL = "https://93.184.215.14/hooks"
IMPORT_CSV = "sku,name,price,currency\nFUZZ-IMPORT-1,Imported,1.00,EUR\n"


def created(server: LiveServer, access: str, path: str, **request) -> dict:
    response = httpx.post(
        f"{server.url}/api/v1/{path}",
        headers={"Authorization": f"Bearer {access}"},
        timeout=REQUEST_TIMEOUT,
        **request,
    )
    assert response.status_code in {201, 202}, response.text
    return response.json()


def seed_objects(
    server: LiveServer, access: str, tenant
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Real objects for the operations schemathesis cannot link to a response of its own:
    operationId -> the path parameters that name one (deletes get objects of their own), and
    the ids of roles that exist."""
    viewer = created(server, access, "roles/", json={"name": "fuzz-viewer", "permissions": []})

    def api_key() -> str:
        body = {"name": "fuzzing", "permissions": ["catalog.read"]}
        return created(server, access, "api-keys/", json=body)["id"]

    def invitation() -> str:
        body = {"email": f"{uuid.uuid4().hex[:12]}@example.com", "roles": [viewer["id"]]}
        return created(server, access, "invitations/", json=body)["id"]

    def webhook() -> str:
        body = {"url": WEBHOOK_URL, "topics": ["catalog.product.*"]}
        return created(server, access, "webhooks/", json=body)["id"]

    def oauth_app() -> str:
        body = {
            "name": "fuzzing",
            "redirect_uris": ["https://app.example/callback"],
            "scopes": ["catalog.read"],
        }
        return created(server, access, "oauth-apps/", json=body)["id"]

    def oauth_grant() -> str:
        # A person's consent: the consent page's work, which no API request does.
        app = App.objects.get(pk=oauth_app())
        consent = oauth_services.consent_record(
            app=app, user=owner, tenant_id=tenant.id, scopes=["catalog.read"]
        )
        return str(consent.pk)

    # One endpoint to read and change (a change may deactivate it), one whose deliveries are
    # listed and redelivered (which an inactive endpoint refuses).
    endpoint, delivering = webhook(), webhook()
    owner = owner_of(tenant)
    changed_app = oauth_app()
    job = created(
        server,
        access,
        "products/import/",
        files={"file": ("products.csv", IMPORT_CSV.encode(), "text/csv")},
    )
    with operator_scope("contract fuzzing: objects no request of the run creates"):
        # A dead delivery (what redeliver takes), as the fan-out would have left it.
        delivery = WebhookDelivery.objects.create(
            tenant=tenant,
            endpoint_id=delivering,
            event_id=uuid.uuid4().hex,
            topic="catalog.product.updated",
            payload="{}",
            status=WebhookDelivery.Status.DEAD,
            attempts=8,
        )
        notification = Notification.objects.create(
            tenant=tenant,
            user=owner,
            topic="catalog.product.updated",
            data={"id": str(uuid.uuid4())},
            event_id=uuid.uuid4().hex,
        )
    member, leaving = (make_member(tenant) for _ in range(2))
    return {
        "api_keys_retrieve": {"id": api_key()},
        "api_keys_destroy": {"id": api_key()},
        "invitations_retrieve": {"id": invitation()},
        "invitations_destroy": {"id": invitation()},
        "jobs_retrieve": {"id": job["id"]},
        "members_retrieve": {"id": str(member.pk)},
        "members_partial_update": {"id": str(member.pk)},
        "members_destroy": {"id": str(leaving.pk)},
        "notifications_read_create": {"id": str(notification.id)},
        "oauth_apps_retrieve": {"id": changed_app},
        "oauth_apps_update": {"id": changed_app},
        "oauth_apps_partial_update": {"id": changed_app},
        "oauth_apps_destroy": {"id": oauth_app()},
        "oauth_grants_retrieve": {"id": oauth_grant()},
        "oauth_grants_destroy": {"id": oauth_grant()},
        "webhooks_retrieve": {"id": endpoint},
        "webhooks_update": {"id": endpoint},
        "webhooks_partial_update": {"id": endpoint},
        "webhooks_destroy": {"id": webhook()},
        "webhooks_deliveries_list": {"id": delivering},
        "webhooks_deliveries_redeliver_create": {
            "id": delivering,
            "delivery_id": str(delivery.id),
        },
    }, [viewer["id"]]


# Operations with a path parameter that names no object of the run.
NOT_ON_OBJECTS = {
    # A tenant's slug, public; its success is a redirect to the tenant's identity provider,
    # which tests/accounts/test_sso.py follows against a real one.
    "auth_sso_start_retrieve",
    # A signed link, which no generated value can be (so a 404 each time, as documented); the
    # archives of real links are downloaded by tests/kernel/test_data_export.py.
    "export_download",
}


def write_config(directory: Path, pins: dict[str, dict[str, str]], role_ids: list[str]) -> Path:
    """A schemathesis.toml that gives each pinned operation its path parameters, and half of
    the role ids in bodies (an invitation's, a member's roles) from roles that exist, so that
    some of those requests get past the check that they do."""
    lines = [
        "[dictionaries.role_ids]",
        f"values = {json.dumps(role_ids)}",
        "",
        "[parameters]",
        '"body.roles[*]" = { dictionary = "role_ids", probability = 0.5 }',
        "",
    ]
    for operation_id, parameters in pins.items():
        values = ", ".join(
            f'"path.{name}" = {json.dumps(value)}' for name, value in parameters.items()
        )
        lines += ["[[operations]]", f"include-operation-id = {json.dumps(operation_id)}"]
        lines += [f"parameters = {{ {values} }}", ""]
    path = directory / "schemathesis.toml"
    path.write_text("\n".join(lines))
    return path


def statuses_by_operation(report_dir: Path, document: dict) -> dict[str, Counter]:
    """operationId -> how many responses of each status the run's HAR report holds."""
    templates = [
        (method.upper(), path.strip("/").split("/"), operation["operationId"])
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in {"get", "put", "post", "patch", "delete"}
    ]

    def operation_of(method: str, url: str) -> str | None:
        segments = httpx.URL(url).path.strip("/").split("/")
        for template_method, template, operation_id in templates:
            if template_method == method and len(template) == len(segments):
                pairs = zip(template, segments, strict=True)
                if all(t.startswith("{") or t == s for t, s in pairs):
                    return operation_id
        return None

    statuses: dict[str, Counter] = defaultdict(Counter)
    for har in report_dir.glob("har-*.json"):
        for entry in json.loads(har.read_text())["log"]["entries"]:
            operation_id = operation_of(entry["request"]["method"], entry["request"]["url"])
            if operation_id:
                statuses[operation_id][entry["response"]["status"]] += 1
    return statuses


def live_document(server: LiveServer) -> dict:
    response = httpx.get(f"{server.url}{SCHEMA_PATH}", timeout=REQUEST_TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


def live_operations(server: LiveServer) -> dict[tuple[str, str], str]:
    """(METHOD, path) -> operationId of every operation in the document the server serves."""
    document = live_document(server)
    return {
        (method.upper(), path): operation["operationId"]
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in {"get", "put", "post", "patch", "delete"}
    }


def run_schemathesis(
    server: LiveServer,
    access: str,
    report_dir: Path,
    filters: list[str],
    config: Path | None = None,
) -> subprocess.CompletedProcess:
    command = [
        str(Path(sys.executable).with_name("st")),
        *(["--config-file", str(config)] if config else []),
        "run",
        f"{server.url}{SCHEMA_PATH}",
        "--checks", ",".join(CHECKS),
        "--seed", str(SEED),
        "--max-examples", str(EXAMPLES),
        "--workers", WORKERS,
        "--header", f"Authorization: Bearer {access}",
        "--request-timeout", str(REQUEST_TIMEOUT),
        "--suppress-health-check", "all",
        "--report", "junit,har",
        "--report-dir", str(report_dir),
        "--no-color",
        "--generation-database", "none",
        *filters,
    ]  # fmt: skip
    environment = dict(os.environ, NO_COLOR="1", COLUMNS="120")
    for _ in range(2):
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=environment,
            cwd=report_dir,
            timeout=1800,
            check=False,
        )
        if not crashed_inside_the_tool(result):
            break
    return result


# The tool itself can die of CPython 3.11's parser not being safe in two threads at once:
# hypothesis parses source to describe lambdas, and schemathesis's workers are threads. Such a
# run found nothing about the API and is run again, once; a run that found failures never is.
TOOL_CRASH = "AST constructor recursion depth mismatch"


def crashed_inside_the_tool(result: subprocess.CompletedProcess) -> bool:
    return (
        result.returncode != 0 and TOOL_CRASH in result.stdout and "FAILURES" not in result.stdout
    )


def report_tail(stdout: str) -> str:
    """The run's report from its WARNINGS section (or its SUMMARY when it has none) on."""
    for heading in (" WARNINGS ", "SUMMARY"):
        at = stdout.find(heading) if heading != "SUMMARY" else stdout.rfind(heading)
        if at >= 0:
            return stdout[stdout.rfind("\n", 0, at) + 1 :]
    return stdout


def assert_clean(result: subprocess.CompletedProcess, server: LiveServer) -> None:
    # The summary of a passing run is in the test's output (`pytest -rP` shows it), with the
    # warnings before it, which name the operations they are about.
    print(report_tail(result.stdout))
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
    pins, role_ids = seed_objects(fuzz_server, access, tenant)

    operations = live_operations(fuzz_server)
    missing = set(ISOLATED) - set(operations)
    assert not missing, f"isolated operations no longer in the document: {missing}"
    unknown = set(pins) - set(operations.values())
    assert not unknown, f"pinned operations no longer in the document: {unknown}"
    excluded = [
        argument for key in ISOLATED for argument in ("--exclude-operation-id", operations[key])
    ]
    config = write_config(tmp_path, pins, role_ids)
    result = run_schemathesis(fuzz_server, access, tmp_path, excluded, config)
    assert_clean(result, fuzz_server)

    # Every operation on an object's id reached a real object at least once.
    statuses = statuses_by_operation(tmp_path, live_document(fuzz_server))
    on_objects = {
        operation_id
        for (method, path), operation_id in operations.items()
        if "{" in path and (method, path) not in ISOLATED and operation_id not in NOT_ON_OBJECTS
    }
    unreached = {
        operation_id: dict(statuses[operation_id])
        for operation_id in sorted(on_objects)
        if not any(200 <= status < 300 for status in statuses[operation_id])
    }
    assert not unreached, f"operations that never reached a real object: {unreached}"


@pytest.mark.parametrize("operation", sorted(ISOLATED), ids=lambda key: " ".join(key))
def test_session_ending_operations_hold_to_the_contract(fuzz_server, tmp_path, operation):
    tenant = make_tenant(plan_code="enterprise")
    access = sign_in_live(fuzz_server, tenant)["access"]

    operation_id = live_operations(fuzz_server)[operation]
    result = run_schemathesis(
        fuzz_server, access, tmp_path, ["--include-operation-id", operation_id]
    )
    assert_clean(result, fuzz_server)
