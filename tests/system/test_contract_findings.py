"""What contract fuzzing (tests/system/test_contract_fuzzing.py) found, pinned down one by one: each
was a 5xx, an undocumented status or invalid input accepted, and each is fixed in the code or the
OpenAPI document. These run in-process, so a regression shows here at once and by name."""

import json
import re

import pytest
from drf_spectacular.generators import SchemaGenerator
from jsonschema import Draft202012Validator
from rest_framework.test import APIClient

from kernel.tenancy.selectors import permission_codes
from tests.catalog_helpers import make_category, make_product
from tests.factories import DEFAULT_PASSWORD, make_member
from tests.helpers import API, assert_problem, client_for, error_fields, owner_of

pytestmark = [pytest.mark.django_db, pytest.mark.tenant(plan_code="enterprise")]


@pytest.fixture
def owner(tenant):
    return client_for(owner_of(tenant), tenant)


@pytest.mark.parametrize("path", ["categories/", "roles/", "webhooks/", "notifications/read-all/"])
def test_options_describes_a_viewset_instead_of_failing(owner, path):
    # DRF checks the permissions of POST and PUT under the action "metadata".
    response = owner.options(f"{API}/{path}", data='{"name": "0"}', content_type="application/json")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"


def test_options_is_json_even_where_the_view_renders_csv(owner):
    response = owner.options(f"{API}/products/export/?format=csv")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"


@pytest.mark.parametrize("value", ["AAA", ""])
def test_an_unknown_or_empty_format_is_a_400_naming_it(owner, value):
    # An empty one was taken for none, and answered 200 with CSV.
    response = owner.get(f"{API}/products/export/", {"format": value})
    assert error_fields(response) == {"format"}


@pytest.mark.parametrize("value", [0, 1, "true", "off", None])
def test_a_boolean_field_takes_only_a_json_boolean(owner, tenant, value):
    # DRF's BooleanField took 0, 1, "true", "off"...: invalid input accepted.
    product = make_product(tenant)
    response = owner.patch(f"{API}/products/{product.id}/", {"is_active": value}, format="json")
    assert error_fields(response) == {"is_active"}


@pytest.mark.parametrize("value", [0, 1, "true", "off", None])
def test_a_webhooks_active_flag_takes_only_a_json_boolean(owner, value):
    body = {"url": "https://93.184.215.14/hooks", "topics": ["catalog.product.*"]}
    response = owner.post(f"{API}/webhooks/", {**body, "is_active": value}, format="json")
    assert error_fields(response) == {"is_active"}
    assert owner.get(f"{API}/webhooks/").json()["results"] == []


@pytest.mark.parametrize("path", ["roles/", "members/", "invitations/", "permissions/"])
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"cursor": "|\U0004f962"}, "cursor"),
        ({"page_size": "null"}, "page_size"),
        ({"page_size": ""}, "page_size"),
    ],
)
def test_the_tenant_lists_refuse_a_bad_cursor_or_page_size(owner, path, query, field):
    # They had DRF's own paginator: a 404 for a bad cursor, and any page size taken as default.
    assert error_fields(owner.get(f"{API}/{path}", query)) == {field}


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("products/", {"updated_since": ""}),
        ("products/export/", {"updated_since": ""}),
        ("products/", {"category": ""}),
        ("categories/", {"parent": ""}),
        ("audit-events/", {"until": ""}),
        ("notifications/", {"unread": "null"}),
        ("notifications/", {"unread": ""}),
    ],
)
def test_an_empty_or_null_filter_is_refused_not_ignored(owner, path, query):
    assert error_fields(owner.get(f"{API}/{path}", query)) == set(query)


@pytest.mark.parametrize("path", ["products/", "products/export/"])
@pytest.mark.parametrize("offset", ["+19:00", "-19:56", "+15:30"])
def test_a_time_with_any_iso_offset_filters_instead_of_failing(owner, tenant, path, offset):
    # PostgreSQL takes offsets up to 15:59: `+19:00` reached it as a database error.
    make_product(tenant, sku="T-1")
    response = owner.get(f"{API}/{path}", {"updated_since": f"2000-01-01T00:00:00{offset}"})
    assert response.status_code == 200, response.content


def test_a_time_beyond_the_calendar_in_utc_is_a_400(owner):
    response = owner.get(f"{API}/products/", {"updated_since": "9999-12-31T23:00:00-05:00"})
    assert error_fields(response) == {"updated_since"}


def test_notifications_filter_on_unread_still_works(owner):
    for value in ("true", "false"):
        assert owner.get(f"{API}/notifications/", {"unread": value}).status_code == 200
    assert owner.get(f"{API}/notifications/").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("patch", "tenant/", {"name": 0}, "name"),
        ("post", "categories/", {"name": 12}, "name"),
        ("post", "roles/", {"name": 1.5, "permissions": []}, "name"),
    ],
)
def test_a_string_field_takes_only_a_string(owner, method, path, body, field):
    response = getattr(owner, method)(f"{API}/{path}", body, format="json")
    assert error_fields(response) == {field}


def test_a_category_change_with_a_non_string_slug_is_a_400_before_any_precondition(owner, tenant):
    category = make_category(tenant)
    response = owner.patch(
        f"{API}/categories/{category.id}/", {"slug": 0}, format="json", HTTP_IF_MATCH=""
    )
    assert_problem(response, 400, "validation-error")


def test_conflicts_the_services_raise_are_documented():
    schema = SchemaGenerator(api_version="v1").get_schema(request=None, public=True)
    paths = schema["paths"]
    for path, method in [
        ("/api/v1/roles/", "post"),
        ("/api/v1/roles/{id}/", "put"),
        ("/api/v1/roles/{id}/", "patch"),
        ("/api/v1/roles/{id}/", "delete"),
        ("/api/v1/members/{id}/", "patch"),
        ("/api/v1/members/{id}/", "delete"),
        ("/api/v1/invitations/", "post"),
        ("/api/v1/invitations/{id}/", "delete"),
        ("/api/v1/invitations/accept/", "post"),
        ("/api/v1/auth/signup/", "post"),
    ]:
        conflict = paths[path][method]["responses"]["409"]["content"]["application/problem+json"]
        assert conflict["schema"] == {"$ref": "#/components/schemas/Problem"}, (method, path)
    for path_item in paths.values():
        for operation in path_item.values():
            assert "503" in operation["responses"], json.dumps(operation)[:200]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("tenant/", '{"settings": {"a": "\\udb33"}}'),
        ("tenant/", '{"settings": {"a": ["\\u0000"]}}'),
        ("auth/password/reset/confirm/", '{"token": "t", "uid": "\\udb89", "new_password": "x"}'),
    ],
)
def test_text_postgresql_cannot_store_is_a_400_not_a_500(owner, path, body):
    method = owner.patch if path == "tenant/" else owner.post
    response = method(f"{API}/{path}", data=body, content_type="application/json")
    assert_problem(response, 400)


def test_a_reset_uid_that_is_no_uuid_is_a_400(owner):
    response = owner.post(
        f"{API}/auth/password/reset/confirm/",
        {"token": "t", "uid": "8J-vgsOJwrE", "new_password": "a long new password 42"},
        format="json",
    )
    assert_problem(response, 400, "validation-error")


# --- the document states what the validation refuses -------------------------------------------
# The fuzzer "mostly rejected generated data" where the schema was looser than the serializers.
# Each constraint now in the document is checked here against the API: a value the document calls
# invalid is a 400 naming the field, so the two cannot drift apart.


def request_schema(name: str) -> dict:
    schema = SchemaGenerator(api_version="v1").get_schema(request=None, public=True)
    return schema["components"]["schemas"][name]


def documented_valid(property_schema: dict, value: str) -> bool:
    """Whether a string fits the property's pattern and lengths (as a JSON Schema validator,
    with ECMA's `$`: a trailing newline does not fit)."""
    pattern = property_schema.get("pattern")
    return (
        len(value) >= property_schema.get("minLength", 0)
        and len(value) <= property_schema.get("maxLength", len(value))
        and (pattern is None or re.search(pattern.replace("$", r"\Z"), value) is not None)
    )


@pytest.mark.parametrize("value", [" ", "\u3000\t", "\x1c", "na\x00me"])
def test_text_that_is_blank_or_holds_nul_is_documented_invalid_and_refused(owner, value):
    # DRF strips text before judging it blank, and refuses NUL: the schema said any string.
    assert not documented_valid(request_schema("RoleInputRequest")["properties"]["name"], value)
    response = owner.post(f"{API}/roles/", {"name": value, "permissions": []}, format="json")
    assert error_fields(response) == {"name"}


def test_permission_codes_are_an_enum_of_the_codes_that_exist(owner):
    schema = SchemaGenerator(api_version="v1").get_schema(request=None, public=True)
    assert set(schema["components"]["schemas"]["PermissionsEnum"]["enum"]) == permission_codes()
    for name in ("ApiKeyInputRequest", "RoleInputRequest", "PatchedRoleInputRequest"):
        items = schema["components"]["schemas"][name]["properties"]["permissions"]["items"]
        assert items["allOf"] == [{"$ref": "#/components/schemas/PermissionsEnum"}], name
    response = owner.post(f"{API}/roles/", {"name": "x", "permissions": ["nope"]}, format="json")
    assert error_fields(response) == {"permissions"}


@pytest.mark.parametrize(
    ("component", "path", "body", "field"),
    [
        ("ApiKeyInputRequest", "api-keys/", {"name": "k", "permissions": []}, "permissions"),
        ("InvitationInputRequest", "invitations/", {"email": "a@b.example", "roles": []}, "roles"),
    ],
)
def test_a_list_that_may_not_be_empty_says_min_items(owner, component, path, body, field):
    assert request_schema(component)["properties"][field]["minItems"] == 1
    assert error_fields(owner.post(f"{API}/{path}", body, format="json")) == {field}


def test_a_members_patch_requires_its_roles_as_documented(owner, tenant):
    # The view validates the PATCH body whole; the document called `roles` optional.
    operation = SchemaGenerator(api_version="v1").get_schema(request=None, public=True)["paths"][
        "/api/v1/members/{id}/"
    ]["patch"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/MemberRolesInputRequest"}
    assert operation["requestBody"]["required"] is True
    assert request_schema("MemberRolesInputRequest")["required"] == ["roles"]
    member = make_member(tenant)
    assert error_fields(owner.patch(f"{API}/members/{member.pk}/", {}, format="json")) == {"roles"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("url", " https://93.184.215.14/hooks"),  # was stripped, then accepted
        ("url", "ftp://93.184.215.14/hooks"),
        ("topics", " catalog.product.*"),  # was stripped, then accepted
        ("topics", "catalog.product.*\n"),  # `$` without fullmatch lets a trailing newline by
        ("topics", "Catalog.Product"),
    ],
)
def test_a_webhook_url_or_topic_the_document_refuses_is_refused(owner, field, value):
    properties = request_schema("WebhookEndpointInputRequest")["properties"]
    body = {
        "url": properties["url"]["examples"][0],
        "topics": properties["topics"]["items"]["examples"],
    }
    item = properties[field] if field == "url" else properties[field]["items"]
    assert not documented_valid(item, value)
    response = owner.post(
        f"{API}/webhooks/",
        {**body, field: value if field == "url" else [value]},
        format="json",
    )
    assert error_fields(response) == {field}


def test_the_documented_webhook_examples_are_accepted(owner):
    properties = request_schema("WebhookEndpointInputRequest")["properties"]
    body = {
        "url": properties["url"]["examples"][0],
        "topics": properties["topics"]["items"]["examples"],
    }
    assert owner.post(f"{API}/webhooks/", body, format="json").status_code == 201


@pytest.mark.parametrize("password", ["short1!", "1234567890", "   \t    "])
def test_a_new_password_the_document_refuses_is_refused(password):
    documented = request_schema("SignupRequest")["properties"]["password"]
    assert documented["minLength"] == 8  # MinimumLengthValidator's default, in settings
    assert not documented_valid(documented, password)
    body = {"email": "new@signup.example", "password": password, "tenant_name": "Signup"}
    response = APIClient().post(f"{API}/auth/signup/", body, format="json")
    assert error_fields(response) == {"password"}


def test_a_slug_with_surrounding_space_is_refused_as_its_pattern_says(owner, tenant):
    # DRF trimmed before matching: " acme" was taken for "acme" though the document's pattern
    # (`^[-a-zA-Z0-9_]+$`) calls it invalid.
    signup = {
        "email": "founder@example.com",
        "password": "an entirely new secret 99",
        "name": "Founder",
        "tenant_name": "Fresh Co",
        "tenant_slug": " fresh-co",
    }
    anonymous = APIClient()
    assert error_fields(anonymous.post(f"{API}/auth/signup/", signup, format="json")) == {
        "tenant_slug"
    }
    user = owner_of(tenant)
    sign_in = {"email": user.email, "password": DEFAULT_PASSWORD, "tenant": f"{tenant.slug} "}
    assert error_fields(anonymous.post(f"{API}/auth/token/", sign_in, format="json")) == {"tenant"}
    created = owner.post(f"{API}/categories/", {"name": "Lamps", "slug": " lamps"}, format="json")
    assert error_fields(created) == {"slug"}
    listed = owner.get(f"{API}/audit-events/", {"action": " tenants.member.removed"})
    assert error_fields(listed) == {"action"}


# --- products and the Idempotency-Key, as documented ---------------------------------------------
# The fuzzer's creates and changes of products were refused for what the document allowed: an
# empty or negative price, a null `attributes`, a currency of any three characters, an
# Idempotency-Key with spaces. Each value below is sent; the API takes it exactly when the
# document (a JSON Schema validator on the property) calls it valid.


def documented(component: str, field: str) -> Draft202012Validator:
    return Draft202012Validator(request_schema(component)["properties"][field])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price", "19.99"),
        ("price", 19.99),  # a JSON number is taken too, and said to be
        ("price", "0"),
        ("price", ".5"),
        ("price", "9999999999.99"),
        ("price", ""),
        ("price", "-1"),
        ("price", -1),
        ("price", "1.999"),
        ("price", "10000000000"),
        ("currency", "EUR"),
        ("currency", "eur"),
        ("currency", "uSd"),
        ("currency", "XXX"),  # a real ISO 4217 code, but not a currency a shop sells in
        ("currency", "HRK"),  # withdrawn
        ("currency", "EU"),
        ("attributes", {"color": "red"}),
        ("attributes", {}),
        ("attributes", None),
        ("attributes", ["red"]),
    ],
)
def test_a_product_field_is_taken_exactly_when_the_document_says(owner, field, value):
    body = {"sku": "DOC-1", "name": "Documented", "price": "1.00", field: value}
    response = owner.post(f"{API}/products/", body, format="json")
    if documented("ProductInputRequest", field).is_valid(value):
        assert response.status_code == 201, response.content
    else:
        assert error_fields(response) == {field}


@pytest.mark.parametrize("key", ["order-42", "a" * 255, "", "two words", "é", "a" * 256])
def test_an_idempotency_key_is_taken_exactly_when_the_document_says(owner, key):
    operation = SchemaGenerator(api_version="v1").get_schema(request=None, public=True)["paths"][
        "/api/v1/products/"
    ]["post"]
    (parameter,) = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    body = {"sku": "KEYED-1", "name": "Keyed", "price": "1.00"}
    response = owner.post(f"{API}/products/", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    if Draft202012Validator(parameter["schema"]).is_valid(key):
        assert response.status_code == 201, response.content
    else:
        assert error_fields(response) == {"Idempotency-Key"}
