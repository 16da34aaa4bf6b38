"""The published schema: the committed SDL, the command that writes and checks it, the SDL over
HTTP, and introspection (off unless GRAPHQL_INTROSPECTION).

The served schema is built once, at import, with the setting's value: the tests of introspection
switched on use a schema of their own, built by the same `build_schema`, served by this module's
urlconf.
"""

import io
from importlib import import_module
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from graphql import get_introspection_query

import graphql_api
from graphql_api.schema import build_schema, schema
from graphql_api.view import GraphQLView
from tests.graphql.conftest import data_of, error_codes, gql
from tests.helpers import assert_problem

pytestmark = [pytest.mark.django_db, pytest.mark.tenant(plan_code="pro")]

COMMITTED = Path(graphql_api.__file__).parent / "schema.graphql"
REGENERATE = "python manage.py graphql_schema --output graphql_api/schema.graphql"
SDL_URL = "/graphql/schema.graphql"
SCHEMA_TYPES = "{ __schema { types { name } } }"

# This module is also a urlconf: the project's, but /graphql/ served by a schema with
# introspection on.
urlpatterns = [
    path("graphql/", csrf_exempt(GraphQLView.as_view(schema=build_schema(introspection=True)))),
    *import_module(settings.ROOT_URLCONF).urlpatterns,
]
with_introspection = pytest.mark.urls(__name__)


def current_sdl() -> str:
    return schema.as_str() + "\n"


# --- the committed SDL and the command ---------------------------------------------------------


def test_the_committed_sdl_is_the_current_schema():
    assert COMMITTED.read_text(encoding="utf-8") == current_sdl(), (
        f"graphql_api/schema.graphql is out of date: regenerate it with `{REGENERATE}`."
    )


def test_the_command_prints_the_sdl():
    out = io.StringIO()

    call_command("graphql_schema", stdout=out)

    assert out.getvalue() == current_sdl()
    assert "type Query {" in out.getvalue()
    assert "type Mutation {" in out.getvalue()


def test_the_command_writes_the_sdl_and_checks_a_file_against_it(tmp_path):
    written = tmp_path / "schema.graphql"

    call_command("graphql_schema", "--output", str(written), stderr=io.StringIO())
    call_command("graphql_schema", "--check", str(written), stderr=io.StringIO())

    assert written.read_text(encoding="utf-8") == current_sdl()


@pytest.mark.parametrize(
    "stale",
    [
        pytest.param(lambda sdl: sdl.replace("type Query", "type Querry"), id="changed"),
        pytest.param(lambda sdl: sdl.rstrip("\n"), id="no final newline"),
        pytest.param(lambda sdl: "", id="empty"),
    ],
)
def test_the_check_fails_on_a_file_that_differs_saying_how_to_regenerate(tmp_path, stale):
    file = tmp_path / "schema.graphql"
    file.write_text(stale(current_sdl()), encoding="utf-8")

    with pytest.raises(CommandError, match="differs from the current GraphQL schema") as raised:
        call_command("graphql_schema", "--check", str(file))

    assert REGENERATE in str(raised.value)
    assert str(file) in str(raised.value)


def test_the_check_fails_on_a_missing_file(tmp_path):
    with pytest.raises(CommandError, match="does not exist") as raised:
        call_command("graphql_schema", "--check", str(tmp_path / "nowhere.graphql"))

    assert REGENERATE in str(raised.value)


def test_output_and_check_cannot_be_asked_for_together(tmp_path):
    with pytest.raises(CommandError):
        call_command(
            "graphql_schema", "--output", str(tmp_path / "a"), "--check", str(tmp_path / "b")
        )


# --- the SDL over HTTP -------------------------------------------------------------------------


def test_a_signed_in_client_gets_the_sdl(editor):
    response = editor.get(SDL_URL)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert "type Query {" in response.content.decode()
    assert response.content.decode() == current_sdl()
    assert response["RateLimit-Remaining"]


@pytest.mark.parametrize("authorization", [None, "Bearer forged"])
def test_without_a_valid_credential_the_sdl_is_a_401_problem(api_client, authorization):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}

    response = api_client.get(SDL_URL, **headers)

    body = assert_problem(response, 401, "not-authenticated")
    assert "type Query" not in response.content.decode()
    assert body["request_id"] == response["X-Request-ID"]


def test_the_sdl_is_read_only(editor):
    response = editor.post(SDL_URL, {}, format="json")

    assert_problem(response, 405, "method-not-allowed")
    assert response["Allow"] == "GET, HEAD"


# --- introspection -----------------------------------------------------------------------------


def test_introspection_is_off_unless_asked_for():
    # The default follows DEBUG, which is off here as in production.
    assert settings.DEBUG is False
    assert settings.GRAPHQL_INTROSPECTION is False


@pytest.mark.parametrize(
    "query",
    [SCHEMA_TYPES, '{ __type(name: "Product") { fields { name } } }', get_introspection_query()],
)
def test_the_served_schema_refuses_introspection(editor, query):
    response = gql(editor, query)

    assert response.status_code == 200
    assert response.json()["data"] is None
    assert error_codes(response)
    assert set(error_codes(response)) == {"BAD_USER_INPUT"}
    assert "introspection" in response.json()["errors"][0]["message"].lower()
    assert "Product" not in response.content.decode()


def test_the_served_schema_suggests_no_field_names(editor):
    # "Did you mean …?" would give the schema away without introspection.
    response = gql(editor, "{ products { edges { node { skuu } } } }")

    assert error_codes(response) == ["BAD_USER_INPUT"]
    assert "Did you mean" not in response.content.decode()


@with_introspection
def test_with_introspection_on_the_schema_is_answered(editor):
    response = gql(editor, SCHEMA_TYPES)

    names = {entry["name"] for entry in data_of(response)["__schema"]["types"]}
    assert {"Query", "Mutation", "Product", "ProductConnection"} <= names


@with_introspection
def test_introspection_is_not_held_to_the_depth_and_cost_limits(editor):
    # A tool's full introspection query nests `ofType` far deeper than GRAPHQL_MAX_DEPTH: it
    # reads the schema, not the database, and is not measured.
    response = gql(editor, get_introspection_query(descriptions=True))

    assert data_of(response)["__schema"]["queryType"]["name"] == "Query"


@with_introspection
def test_with_introspection_on_the_other_limits_still_hold(editor):
    response = gql(editor, "{ products(first: 101) { totalCount } __schema { types { name } } }")

    assert response.json()["data"] is None
    assert error_codes(response) == ["QUERY_TOO_COMPLEX"]
