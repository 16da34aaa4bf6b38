"""Contract fuzzing of GraphQL: schemathesis against /graphql/ of a real server process.

As the REST fuzzing (tests/system/test_contract_fuzzing.py): a uvicorn process serves the
application on the test database, and schemathesis' CLI calls every Query and Mutation field as
the owner of a tenant on the enterprise plan (whose rate limits a run does not reach), with
arguments that fit the schema and arguments that do not, with a fixed seed, one worker and a
bounded number of examples per field (`FUZZ_EXAMPLES`): the same run every time.

The schema is the SDL the server publishes to signed-in clients (/graphql/schema.graphql): the
server runs as in production, introspection off, and what is fuzzed is what clients are given.

schemathesis' own `not_a_server_error` takes any error with a `path` (a resolver's answer) for a
server failure; here NOT_FOUND for a made-up id is an answer. So the check is the contract's
(`graphql_answer`, loaded into schemathesis from a hooks file written from `HOOKS`): never a 5xx,
every response a GraphQL response (a JSON object with `data` and/or `errors`), every error
carrying one of the contract's `extensions.code`s and none of them INTERNAL_SERVER_ERROR (a bug,
whatever the status), and 200 unless rate-limited. With it, schemathesis'
`response_schema_conformance` (no null where the schema promises a value) and
`negative_data_rejection` (a document the schema refuses is refused).

Made-up values rarely get past validation, so the run is steered to what each field does:

- the tenant gets categories (empty ones, and one with a product and a subcategory) and
  products through GraphQL, and notifications of the owner's (which no request makes) in the
  database; the `UUID` strategy draws each kind's ids as often as made-up ones, so the fields on
  an object reach real ones;
- `Decimal` and `JSON`, which schemathesis has no strategy for, get one (edge cases included:
  `NaN`, `1e400`, non-objects);
- a config file gives half of the `first`, `sku`, `currency`, `name` and `expectedVersion`
  arguments valid values.

The deletes get a run of their own, on objects of their own (see the test). Then every field
must have been answered with data at least once: a run refused everywhere would prove nothing.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from graphql import build_schema

from graphql_api.errors import CODE_OF_PROBLEM, QUERY_TOO_COMPLEX
from kernel.context import tenant_context
from notifications.models import Notification
from tests.factories import make_tenant
from tests.fixtures.servers import LiveServer
from tests.helpers import owner_of
from tests.system.test_contract_fuzzing import REQUEST_TIMEOUT, assert_clean, sign_in_live

pytestmark = pytest.mark.django_db(transaction=True)

GRAPHQL_PATH = "/graphql/"
SDL_PATH = "/graphql/schema.graphql"
SEED = 42
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
CHECKS = ("graphql_answer", "response_schema_conformance", "negative_data_rejection")
# Every `extensions.code` the contract allows (docs: API conventions, "GraphQL").
CODES = sorted({*CODE_OF_PROBLEM.values(), QUERY_TOO_COMPLEX})

HOOKS = '''
"""The GraphQL contract's check, and strategies for the schema's own scalars."""

import graphql
import schemathesis
from hypothesis import strategies as st
from schemathesis.graphql import nodes

CODES = frozenset(__CODES__)
SERVER_ERROR = "INTERNAL_SERVER_ERROR"


@schemathesis.check
def graphql_answer(ctx, response, case):
    """Never a server error; always a GraphQL response with the contract's error codes."""
    if response.status_code >= 500:
        raise AssertionError(f"Server error: {response.status_code}")
    try:
        body = response.json()
    except ValueError as error:
        raise AssertionError(f"Not JSON ({response.status_code}): {error}") from error
    if not isinstance(body, dict) or not ({"data", "errors"} & body.keys()):
        raise AssertionError(f"Not a GraphQL response ({response.status_code}): {body!r}")
    errors = body.get("errors") or []
    if not isinstance(errors, list):
        raise AssertionError(f"`errors` is not a list: {errors!r}")
    for error in errors:
        code = (error.get("extensions") or {}).get("code")
        if code == SERVER_ERROR:
            request_id = error["extensions"].get("request_id")
            raise AssertionError(f"INTERNAL_SERVER_ERROR (request_id {request_id}): {error}")
        if code not in CODES or not isinstance(error.get("message"), str):
            raise AssertionError(f"An error outside the contract: {error!r}")
    rate_limited = any(error["extensions"]["code"] == "RATE_LIMITED" for error in errors)
    expected = 429 if rate_limited else 200
    if response.status_code != expected:
        raise AssertionError(f"Status {response.status_code}, expected {expected}: {body!r}")


def _object(entries):
    return nodes.Object(
        [
            graphql.ObjectFieldNode(name=graphql.NameNode(value=name), value=value)
            for name, value in entries.items()
        ]
    )


_json_values = st.one_of(
    st.text(max_size=20).map(nodes.String),
    st.integers(min_value=-(2**40), max_value=2**40).map(nodes.Int),
    st.booleans().map(nodes.Boolean),
)
schemathesis.graphql.scalar(
    "JSON",
    st.one_of(
        st.dictionaries(
            st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True), _json_values, max_size=5
        ).map(_object),
        _json_values,
    ),
)
schemathesis.graphql.scalar(
    "Decimal",
    st.one_of(
        st.decimals(min_value=0, max_value=10**6, places=2).map(str),
        st.decimals(allow_nan=False, allow_infinity=False).map(str),
        st.sampled_from(["NaN", "-Infinity", "1e400", "-0", "0.001", "1E+2", ""]),
        st.text(max_size=10),
    ).map(nodes.String),
)
# Mostly real objects of the run's tenant, of each kind alike (so that the fields on an object
# reach one), and made-up ids.
schemathesis.graphql.scalar(
    "UUID",
    st.one_of(
        *(st.sampled_from(ids) for ids in __IDS__.values()), st.uuids().map(str)
    ).map(nodes.String),
)
'''


@pytest.fixture
def fuzz_server(live_asgi_server_factory, throwaway_redis) -> LiveServer:
    """The application with a broker of its own (nothing the fuzzer causes reaches another
    test's worker) and pooled connections (see the REST fuzzing's fixture)."""
    return live_asgi_server_factory(
        CELERY_BROKER_URL=throwaway_redis.url(0),
        CELERY_TASK_ALWAYS_EAGER="false",
        DATABASE_POOL="true",
        DATABASE_POOL_MAX_SIZE="4",
        # As in production, whatever the environment the tests run in says.
        GRAPHQL_INTROSPECTION="false",
    )


def graphql_request(server: LiveServer, access: str, query: str, variables: dict) -> dict:
    response = httpx.post(
        f"{server.url}{GRAPHQL_PATH}",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {access}"},
        timeout=REQUEST_TIMEOUT,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


CREATE_CATEGORY = "mutation($in: CategoryCreateInput!) { categoryCreate(input: $in) { id } }"
CREATE_PRODUCT = "mutation($in: ProductCreateInput!) { productCreate(input: $in) { id } }"
SEEDED = 3  # objects of each kind: a delete's first success leaves others to the other fields


def seed(server: LiveServer, access: str, tenant, label: str) -> dict[str, list[str]]:
    """Real objects for the fields on an object, by kind: categories (empty ones first, the
    generator's favourite being the first, then one with a product and a subcategory under it),
    products, and notifications of the owner's."""

    def category(name: str, parent: str | None = None) -> str:
        body = {"in": {"name": name, "parent": parent}}
        return graphql_request(server, access, CREATE_CATEGORY, body)["categoryCreate"]["id"]

    categories = [category(f"{label} {n}") for n in range(SEEDED)]
    parent = category(f"{label} parent")
    categories += [parent, category(f"{label} child", parent)]
    products = []
    for n in range(SEEDED):
        product = {
            "sku": f"{label}-{n}",
            "name": f"{label} product {n}",
            "price": "19.99",
            "currency": "EUR",
            "stock": 3,
            "category": parent if n == 0 else None,
            "tags": ["fuzz"],
            "attributes": {"colour": "red"},
        }
        created = graphql_request(server, access, CREATE_PRODUCT, {"in": product})
        products.append(created["productCreate"]["id"])
    with tenant_context(tenant.id):
        notifications = [
            str(
                Notification.objects.create(
                    user=owner_of(tenant),
                    topic="catalog.product.updated",
                    data={"id": products[0]},
                    event_id=f"{label}-{n}",
                ).id
            )
            for n in range(SEEDED)
        ]
    return {"product": products, "category": categories, "notification": notifications}


def published_sdl(server: LiveServer, access: str, directory: Path) -> Path:
    response = httpx.get(
        f"{server.url}{SDL_PATH}",
        headers={"Authorization": f"Bearer {access}"},
        timeout=REQUEST_TIMEOUT,
    )
    assert response.status_code == 200, response.text
    path = directory / "schema.graphql"
    path.write_text(response.text)
    return path


# Valid values for arguments the generator would otherwise nearly never get right, drawn half
# of the time: pages of a valid size, SKUs, currencies and names a product may have, the
# versions a seeded object has.
CONFIG = """
[dictionaries.page_sizes]
values = [1, 2, 25, 100]

[dictionaries.skus]
values = ["FUZZ-A", "FUZZ-B", "FUZZ-0", "fuzz.c/1", "FUZZ_D-2"]

[dictionaries.currencies]
values = ["EUR", "USD", "JPY"]

[dictionaries.versions]
values = [1, 2, 3]

[dictionaries.names]
values = ["Fuzzed", "Fuzzed again", "Ünïcödé ✓"]

[parameters]
"Query.*.first" = { dictionary = "page_sizes", probability = 0.5 }
"Mutation.*.input.sku" = { dictionary = "skus", probability = 0.5 }
"Mutation.*.input.currency" = { dictionary = "currencies", probability = 0.5 }
"Mutation.*.input.name" = { dictionary = "names", probability = 0.5 }
"Mutation.*.expectedVersion" = { dictionary = "versions", probability = 0.5 }
"""


def run_schemathesis(
    server: LiveServer,
    access: str,
    sdl: Path,
    directory: Path,
    ids: dict[str, list[str]],
    filters: list[str],
) -> subprocess.CompletedProcess:
    directory.mkdir()
    hooks = directory / "graphql_hooks.py"
    source = HOOKS.replace("__CODES__", json.dumps(CODES))
    hooks.write_text(source.replace("__IDS__", json.dumps(ids)))
    config = directory / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file", str(config),
        "run",
        str(sdl),
        "--url", f"{server.url}{GRAPHQL_PATH}",
        "--checks", ",".join(CHECKS),
        "--seed", str(SEED),
        "--max-examples", str(EXAMPLES),
        # One worker: with the seed, the same requests in the same order, so the same run.
        "--workers", "1",
        "--header", f"Authorization: Bearer {access}",
        "--request-timeout", str(REQUEST_TIMEOUT),
        "--suppress-health-check", "all",
        "--report", "junit,har",
        "--report-dir", str(directory),
        "--no-color",
        "--generation-database", "none",
        *filters,
    ]  # fmt: skip
    environment = dict(os.environ, NO_COLOR="1", COLUMNS="120", SCHEMATHESIS_HOOKS=str(hooks))
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=environment,
        cwd=directory,
        timeout=600,
        check=False,
    )


def answered_fields(report_dir: Path) -> set[str]:
    """The operations (`Query.product`) that got data (not null) at least once in the run's
    HAR report."""
    answered = set()
    for har in report_dir.glob("har-*.json"):
        for entry in json.loads(har.read_text())["log"]["entries"]:
            sent = json.loads(entry["request"]["postData"]["text"])["query"].lstrip()
            root = "Mutation" if sent.startswith("mutation") else "Query"
            data = json.loads(entry["response"]["content"].get("text") or "{}").get("data")
            answered |= {f"{root}.{name}" for name, value in (data or {}).items() if value}
    return answered


def operations(sdl: Path) -> set[str]:
    """Every operation schemathesis tests, by its name (`Query.product`)."""
    schema = build_schema(sdl.read_text())
    return {
        f"{root.name}.{name}"
        for root in (schema.query_type, schema.mutation_type)
        for name in root.fields
    }


def test_every_field_holds_to_the_contract(fuzz_server, tmp_path):
    tenant = make_tenant(name="GraphQL fuzzing", plan_code="enterprise")
    access = sign_in_live(fuzz_server, tenant)["access"]
    sdl = published_sdl(fuzz_server, access, tmp_path)
    every = operations(sdl)
    # A delete's first success ends the object it was given; after the other fields have
    # changed the objects (and their versions), few deletes would find one they may delete.
    # The deletes get a run of their own, on objects of their own.
    deletes = sorted(name for name in every if name.startswith("Mutation.") and "Delete" in name)
    assert deletes, "the walk found no delete: the split below would fuzz nothing apart"

    others = run_schemathesis(
        fuzz_server,
        access,
        sdl,
        tmp_path / "others",
        seed(fuzz_server, access, tenant, "FUZZ"),
        [argument for name in deletes for argument in ("--exclude-name", name)],
    )
    assert_clean(others, fuzz_server)
    deleting = run_schemathesis(
        fuzz_server,
        access,
        sdl,
        tmp_path / "deletes",
        seed(fuzz_server, access, tenant, "FUZZ-DEL"),
        [argument for name in deletes for argument in ("--include-name", name)],
    )
    assert_clean(deleting, fuzz_server)

    # Every field answered with data at least once: the run got past refusals to what each does.
    answered = answered_fields(tmp_path / "others") | answered_fields(tmp_path / "deletes")
    assert not every - answered, f"fields never answered with data: {sorted(every - answered)}"
