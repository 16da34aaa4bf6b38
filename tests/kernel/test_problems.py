"""Every error is application/problem+json: through HTTP, with the real middleware stack."""

import json
import logging

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema

from kernel.problems import PROBLEM_CONTENT_TYPE, ProblemType
from tests.kernel.error_views import EXPLODING_PATH, SECRET, schema_urlpatterns

error_views = pytest.mark.urls("tests.kernel.error_views")

STANDARD_MEMBERS = {"type", "title", "status", "detail", "instance", "request_id"}
INTERNAL_ERROR_DETAIL = ProblemType.INTERNAL_ERROR.default_detail


def assert_problem(response, problem_type: ProblemType, *, instance: str) -> dict:
    """The response is the given problem, with every standard member; returns the body."""
    assert response.status_code == problem_type.status
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"https://docs.example/problems/{problem_type.slug}"
    assert body["title"] == problem_type.title
    assert body["status"] == problem_type.status
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert body["instance"] == instance
    assert body["request_id"]
    assert body["request_id"] == response["X-Request-ID"]
    return body


def problem_statuses(responses: dict) -> set[str]:
    return {
        status for status, r in responses.items() if PROBLEM_CONTENT_TYPE in r.get("content", {})
    }


def assert_nothing_leaked(response) -> None:
    text = response.content.decode()
    assert SECRET not in text
    assert "Traceback" not in text
    assert "<html" not in text.lower()


# --- 400 ------------------------------------------------------------------------------------


@error_views
def test_validation_errors_list_each_field_by_dotted_path(client):
    response = client.post(
        "/api/v1/test/things/",
        {
            "attributes": {"color": "blue"},
            "items": [{"name": "ok"}, {"name": "far-too-long-a-name"}],
            "tags": ["a", "too-long"],
        },
        content_type="application/json",
    )

    body = assert_problem(response, ProblemType.VALIDATION_ERROR, instance="/api/v1/test/things/")
    errors = {error["field"]: error for error in body["errors"]}
    assert set(errors) == {"name", "attributes.color", "items.1.name", "tags.1"}
    assert errors["name"]["code"] == "required"
    assert errors["attributes.color"]["code"] == "invalid_choice"
    assert errors["items.1.name"]["code"] == "max_length"
    assert errors["tags.1"]["code"] == "max_length"
    assert all(error["message"] for error in body["errors"])
    assert body["detail"] == "4 fields are invalid."


@error_views
def test_non_field_validation_error_has_a_null_field(client):
    response = client.post(
        "/api/v1/test/things/",
        {"name": "reserved", "attributes": {"color": "red"}, "items": []},
        content_type="application/json",
    )

    body = assert_problem(response, ProblemType.VALIDATION_ERROR, instance="/api/v1/test/things/")
    assert body["errors"] == [
        {"field": None, "code": "reserved", "message": "This name is reserved."}
    ]


@error_views
def test_malformed_json_is_a_400_malformed_request(client):
    response = client.post("/api/v1/test/things/", '{"name": "x",', content_type="application/json")

    body = assert_problem(response, ProblemType.MALFORMED_REQUEST, instance="/api/v1/test/things/")
    assert "JSON parse error" in body["detail"]
    assert "errors" not in body


@error_views
def test_bad_host_header_is_a_400_problem_even_with_debug(client, settings):
    settings.DEBUG = True

    response = client.get("/api/v1/test/post-only/", HTTP_HOST="evil.example")

    assert_problem(response, ProblemType.MALFORMED_REQUEST, instance="/api/v1/test/post-only/")
    assert "ALLOWED_HOSTS" not in response.content.decode()


def test_unparsable_content_length_is_a_400_problem(client):
    response = client.post(
        "/api/v1/schema/", b"{}", content_type="application/json", CONTENT_LENGTH="lots"
    )

    assert_problem(response, ProblemType.MALFORMED_REQUEST, instance="/api/v1/schema/")


# --- 401, 403 -------------------------------------------------------------------------------


@error_views
def test_missing_credentials_stay_401_with_a_bearer_challenge(client):
    # The view's authenticator sends no challenge: DRF alone would answer 403.
    response = client.get("/api/v1/test/things/00000000-0000-0000-0000-000000000000/")

    assert_problem(
        response,
        ProblemType.NOT_AUTHENTICATED,
        instance="/api/v1/test/things/00000000-0000-0000-0000-000000000000/",
    )
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


@error_views
def test_rejected_credentials_are_401_with_one_sentence_of_detail(client):
    response = client.get("/api/v1/test/expired-token/")

    body = assert_problem(
        response, ProblemType.NOT_AUTHENTICATED, instance="/api/v1/test/expired-token/"
    )
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert body["detail"] == "Token is expired."
    assert "AccessToken" not in response.content.decode()


@error_views
def test_missing_permission_is_403(client):
    response = client.get("/api/v1/test/forbidden/")

    body = assert_problem(
        response, ProblemType.PERMISSION_DENIED, instance="/api/v1/test/forbidden/"
    )
    assert body["detail"] == "Only owners may do this."


@error_views
def test_a_raised_problem_keeps_its_type_detail_and_extra_members(client):
    response = client.get("/api/v1/test/suspended/")

    body = assert_problem(
        response, ProblemType.TENANT_SUSPENDED, instance="/api/v1/test/suspended/"
    )
    assert body["detail"] == "This tenant is suspended."
    assert body["tenant"] == "acme"


@error_views
def test_a_problem_raised_in_a_plain_django_view_is_answered_as_such(client):
    response = client.get("/api/v1/test/conflict/")

    body = assert_problem(response, ProblemType.CONFLICT, instance="/api/v1/test/conflict/")
    assert body["detail"] == "A product with this SKU exists."


@error_views
def test_csrf_failure_is_a_403_problem_and_the_admin_pages_stay_html(settings):
    client = Client(enforce_csrf_checks=True)

    login_page = client.get("/admin/login/")
    refused = client.post("/admin/login/", {"username": "a", "password": "b"})

    assert login_page.status_code == 200
    assert login_page["Content-Type"].startswith("text/html")
    body = assert_problem(refused, ProblemType.PERMISSION_DENIED, instance="/admin/login/")
    assert body["detail"].startswith("CSRF verification failed.")


# --- 404 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("url", ["/nowhere", "/api/v1/nonexistent/", "/api/v2/schema/"])
def test_unknown_urls_and_versions_are_404_problems(client, settings, debug, url):
    settings.DEBUG = debug

    response = client.get(url)

    assert_problem(response, ProblemType.NOT_FOUND, instance=url)
    # Django's debug 404 page lists every URL pattern.
    assert "URLconf" not in response.content.decode()


@error_views
def test_a_version_drf_does_not_allow_is_a_404_problem(client):
    assert client.get("/api/v1/test/versioned/").json() == {"version": "v1"}

    response = client.get("/api/v2/test/versioned/")

    assert_problem(response, ProblemType.NOT_FOUND, instance="/api/v2/test/versioned/")


@error_views
@pytest.mark.parametrize("debug", [False, True])
def test_http404_from_a_plain_view_is_a_404_problem_without_its_message(client, settings, debug):
    settings.DEBUG = debug

    response = client.get("/api/v1/test/missing/")

    assert_problem(response, ProblemType.NOT_FOUND, instance="/api/v1/test/missing/")
    assert_nothing_leaked(response)


# --- 405, 406, 413, 415, 429 ----------------------------------------------------------------


@error_views
def test_drf_405_keeps_allow(client):
    response = client.get("/api/v1/test/things/")

    body = assert_problem(response, ProblemType.METHOD_NOT_ALLOWED, instance="/api/v1/test/things/")
    assert response["Allow"] == "POST, OPTIONS"
    assert '"GET"' in body["detail"]


@error_views
def test_plain_django_405_becomes_a_problem_and_keeps_allow(client):
    response = client.delete("/api/v1/test/post-only/")

    body = assert_problem(
        response, ProblemType.METHOD_NOT_ALLOWED, instance="/api/v1/test/post-only/"
    )
    assert response["Allow"] == "POST"
    assert '"DELETE"' in body["detail"]


@error_views
def test_unsatisfiable_accept_is_406(client):
    response = client.post(
        "/api/v1/test/things/", "{}", content_type="application/json", HTTP_ACCEPT="text/csv"
    )

    assert_problem(response, ProblemType.NOT_ACCEPTABLE, instance="/api/v1/test/things/")


@error_views
def test_body_over_the_limit_is_413_before_the_view_reads_it(client, settings):
    settings.MAX_REQUEST_BODY_BYTES = 100
    thing = {"name": "", "attributes": {"color": "red"}, "items": []}
    at_limit = json.dumps({**thing, "name": "x" * (100 - len(json.dumps(thing)))})
    over_limit = json.dumps({**thing, "name": "x" * 200})
    assert len(at_limit) == 100

    accepted = client.post("/api/v1/test/things/", at_limit, content_type="application/json")
    refused = client.post("/api/v1/test/things/", over_limit, content_type="application/json")

    assert accepted.status_code == 201
    body = assert_problem(refused, ProblemType.PAYLOAD_TOO_LARGE, instance="/api/v1/test/things/")
    assert "100" in body["detail"]


@error_views
def test_request_data_too_big_from_django_is_413(client, settings):
    # Django's own guard (DATA_UPLOAD_MAX_MEMORY_SIZE) trips in the view, not in the middleware.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10

    response = client.post("/api/v1/test/read-body/", b"x" * 50, content_type="text/plain")

    assert_problem(response, ProblemType.PAYLOAD_TOO_LARGE, instance="/api/v1/test/read-body/")


@error_views
@pytest.mark.parametrize("content_type", ["text/plain", "application/xml"])
def test_non_json_body_is_415(client, content_type):
    response = client.post("/api/v1/test/things/", "<thing/>", content_type=content_type)

    body = assert_problem(
        response, ProblemType.UNSUPPORTED_MEDIA_TYPE, instance="/api/v1/test/things/"
    )
    assert content_type in body["detail"]


@error_views
def test_throttled_is_429_with_retry_after(client):
    response = client.get("/api/v1/test/throttled/")

    assert_problem(response, ProblemType.RATE_LIMITED, instance="/api/v1/test/throttled/")
    assert response["Retry-After"] == "42"


# --- 500 ------------------------------------------------------------------------------------


@error_views
@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("url", ["/api/v1/test/crash/", "/api/v1/test/crash-api/"])
def test_unexpected_exception_is_a_generic_500_and_logged(settings, caplog, debug, url):
    settings.DEBUG = debug
    client = Client(raise_request_exception=False)

    with caplog.at_level(logging.ERROR):
        response = client.get(url)

    body = assert_problem(response, ProblemType.INTERNAL_ERROR, instance=url)
    assert set(body) == STANDARD_MEMBERS
    assert body["detail"] == INTERNAL_ERROR_DETAIL
    assert_nothing_leaked(response)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.name for r in errors] == ["kernel.problems"]
    assert str(errors[0].exc_info[1]) == SECRET


@error_views
@pytest.mark.parametrize("debug", [False, True])
def test_unexpected_exception_in_an_async_view_is_a_generic_500(settings, debug):
    settings.DEBUG = debug
    client = AsyncClient(raise_request_exception=False)

    response = async_to_sync(client.get)("/api/v1/test/crash-async/")

    body = assert_problem(
        response, ProblemType.INTERNAL_ERROR, instance="/api/v1/test/crash-async/"
    )
    assert body["detail"] == INTERNAL_ERROR_DETAIL
    assert_nothing_leaked(response)


@error_views
@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_exception_raised_in_a_middleware_is_a_generic_500(settings, caplog, debug, mode):
    settings.DEBUG = debug
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "tests.kernel.error_views.exploding_middleware"]

    with caplog.at_level(logging.ERROR):
        if mode == "sync":
            response = Client(raise_request_exception=False).post(EXPLODING_PATH)
        else:
            client = AsyncClient(raise_request_exception=False)
            response = async_to_sync(client.post)(EXPLODING_PATH)

    body = assert_problem(response, ProblemType.INTERNAL_ERROR, instance=EXPLODING_PATH)
    assert set(body) == STANDARD_MEMBERS
    assert body["detail"] == INTERNAL_ERROR_DETAIL
    assert_nothing_leaked(response)
    # Django logs what it caught at the middleware level, traceback included, and only once.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert str(errors[0].exc_info[1]) == SECRET


@error_views
def test_async_stack_answers_problems_too(settings):
    settings.MAX_REQUEST_BODY_BYTES = 10
    client = AsyncClient()

    unknown = async_to_sync(client.get)("/api/v1/nonexistent/")
    too_large = async_to_sync(client.post)(
        "/api/v1/test/things/", {"name": "x" * 20}, content_type="application/json"
    )

    assert_problem(unknown, ProblemType.NOT_FOUND, instance="/api/v1/nonexistent/")
    assert_problem(too_large, ProblemType.PAYLOAD_TOO_LARGE, instance="/api/v1/test/things/")


# --- OpenAPI --------------------------------------------------------------------------------


def test_served_schema_has_the_problem_components_and_is_valid(client):
    response = client.get("/api/v1/schema/?format=json")

    assert response.status_code == 200
    schema = json.loads(response.content)
    validate_schema(schema)
    components = schema["components"]["schemas"]
    assert {"Problem", "ValidationProblem", "ProblemFieldError"} <= set(components)
    assert set(components["Problem"]["required"]) == STANDARD_MEMBERS
    for path_item in schema["paths"].values():
        for operation in path_item.values():
            problem = operation["responses"]["500"]["content"]["application/problem+json"]
            assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}


def test_each_operation_declares_the_problems_that_fit_it():
    schema = SchemaGenerator(patterns=schema_urlpatterns, api_version="v1").get_schema(
        request=None, public=True
    )

    validate_schema(schema)
    create = schema["paths"]["/api/v1/test/things/"]["post"]["responses"]
    retrieve = schema["paths"]["/api/v1/test/things/{thing_id}/"]["get"]["responses"]
    assert problem_statuses(create) == {"400", "413", "415", "429", "500", "503"}
    assert problem_statuses(retrieve) == {"401", "403", "404", "429", "500", "503"}
    assert create["400"]["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/ValidationProblem"
    }
    assert "WWW-Authenticate" in retrieve["401"]["headers"]
    assert "Retry-After" in create["429"]["headers"]
