"""The GraphQL isolation matrix, generated from the schema.

The Query and Mutation fields are read from the SDL the endpoint publishes; nothing here lists
them. A new field is covered the moment it is in the schema:

- every field taking an `id` is called by tenant A's admin (who holds every permission) with the
  id of one of tenant B's objects: NOT_FOUND, no data for the field, and B's row unchanged. The
  same call by B's admin succeeds: the NOT_FOUND was the tenant, not arguments that name
  nothing;
- every connection (a list) is read by A's admin while B has rows of its kind: none of B's rows,
  and A's own row of that kind is there (a list that shows nothing would pass vacuously);
- every argument or input field that refers to another object by UUID (`filter.category`,
  `parent`, `input.category`) is given one of B's ids: a list shows nothing of B's, a mutation
  is refused (BAD_USER_INPUT, naming the field) and changes nothing.

The arguments of a call are built from the argument types (the required ones, plus a new `name`
where an update input would otherwise change nothing). The hand-written parts are `FACTORIES`,
which make an object of a kind (a field's leading word: `productUpdate` is a product's) in a
tenant, `REFERENCES`, which says what kind a UUID argument names, and `EXEMPT`, the fields that
are no case, with the reason why. A field that is neither a case nor exempt, or a case without
what it needs, fails `test_every_field_is_covered`.
"""

import datetime
import itertools
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.db.models import Model
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    Undefined,
    build_schema,
    get_named_type,
)
from rest_framework.test import APIClient

from catalog.models import Category, Product
from graphql_api.schema import schema as graphql_schema
from kernel.context import tenant_context
from kernel.tenancy.models import Membership
from notifications.models import Notification
from tests.catalog_helpers import make_category, make_product
from tests.factories import make_member, make_tenant
from tests.graphql.conftest import gql
from tests.helpers import client_for, outcome

pytestmark = pytest.mark.django_db

# The schema as clients get it (GET /graphql/schema.graphql), types and all.
SCHEMA = build_schema(graphql_schema.as_str())
ROOTS = {"Query": SCHEMA.query_type, "Mutation": SCHEMA.mutation_type}
CONNECTION_SUFFIX = "Connection"
# The largest page a client may ask for: a list is read whole in one request.
MAX_PAGE = 100

# "Type.field" -> why it takes no part in the isolation matrix. Every other field must be a case
# of it (take an id, list, or refer to an object by UUID): a new field that is none of these
# fails test_every_field_is_covered until it is listed here, with its reason.
EXEMPT: dict[str, str] = {
    "Query.me": "names nothing: the caller themselves, from their own credential",
    "Query.tenant": "names nothing: the caller's own tenant, from their own credential",
}

# The argument or input field that refers to an object by UUID -> the kind of that object.
REFERENCES = {
    "category": "category",  # ProductFilter.category, Product*Input.category
    "parent": "category",  # categories(parent:), Category*Input.parent
}

_seq = itertools.count(1)


# --- objects of a tenant, by kind --------------------------------------------------------------


def _product(tenant, user) -> Model:
    return make_product(tenant, sku=f"MATRIX-{next(_seq)}")


def _category(tenant, user) -> Model:
    return make_category(tenant)


def _notification(tenant, user) -> Model:
    # The user's own, of a topic every reader of the catalog may see: what they can list and mark.
    with tenant_context(tenant.id):
        return Notification.objects.create(
            user=user,
            topic="catalog.product.updated",
            data={"id": str(uuid.uuid4())},
            event_id=uuid.uuid4().hex,
        )


def _member(tenant, user) -> Model:
    return make_member(tenant, roles=("viewer",))


# kind -> a new object of that kind in `tenant`, belonging to `user` where objects belong to one.
FACTORIES: dict[str, Callable[[Any, Any], Model]] = {
    "product": _product,
    "category": _category,
    "notification": _notification,
    "member": _member,
}
# The models whose rows a call might change: what "nothing changed" compares.
MODELS: tuple[type[Model], ...] = (Product, Category, Notification, Membership)


# --- the schema walk ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One Query or Mutation field, as the schema declares it."""

    root: str  # "Query" | "Mutation"
    name: str
    definition: GraphQLField

    @property
    def id(self) -> str:
        return f"{self.root}.{self.name}"

    @property
    def takes_id(self) -> bool:
        return "id" in self.definition.args

    @property
    def is_connection(self) -> bool:
        return get_named_type(self.definition.type).name.endswith(CONNECTION_SUFFIX)

    @property
    def kind(self) -> str:
        """The kind of object the field is about: `productUpdate` -> product, `categories` ->
        category."""
        word = re.match(r"[a-z]+", self.name).group()
        if self.is_connection:
            return word[:-3] + "y" if word.endswith("ies") else word.removesuffix("s")
        return word

    def references(self) -> list[tuple[str, ...]]:
        """The paths of its arguments (and their input fields) that hold another object's UUID,
        `id` aside: ("filter", "category"), ("input", "parent")."""
        found = []
        for name, argument in self.definition.args.items():
            named = get_named_type(argument.type)
            if isinstance(named, GraphQLInputObjectType):
                found += [
                    (name, inner)
                    for inner, inner_field in named.fields.items()
                    if get_named_type(inner_field.type).name == "UUID"
                ]
            elif named.name == "UUID" and name != "id":
                found.append((name,))
        return found


def schema_fields() -> Iterator[Field]:
    for root, root_type in ROOTS.items():
        if root_type is not None:
            for name, definition in root_type.fields.items():
                yield Field(root, name, definition)


FIELDS = list(schema_fields())
ID_FIELDS = [field for field in FIELDS if field.takes_id and field.id not in EXEMPT]
LISTS = [
    field
    for field in FIELDS
    if field.root == "Query" and field.is_connection and field.id not in EXEMPT
]
REFERENCE_CASES = [
    pytest.param(field, path, id=f"{field.id}({'.'.join(path)})")
    for field in FIELDS
    if field.id not in EXEMPT
    for path in field.references()
]


# --- documents and arguments -------------------------------------------------------------------


def selection(graphql_type) -> str:
    """What to ask of a field's result: its `id` where it has one (a connection's nodes' ids),
    its type name otherwise, nothing for a scalar."""
    named = get_named_type(graphql_type)
    if not isinstance(named, GraphQLObjectType):
        return ""
    if "id" in named.fields:
        return " { id }"
    if "edges" in named.fields:
        return f" {{ edges{selection(named.fields['edges'].type)} }}"
    if "node" in named.fields:
        return f" {{ node{selection(named.fields['node'].type)} }}"
    return " { __typename }"


def value_for(graphql_type, name: str) -> Any:
    """A valid value of `graphql_type` for an argument or input field called `name`."""
    if isinstance(graphql_type, GraphQLNonNull):
        return value_for(graphql_type.of_type, name)
    if isinstance(graphql_type, GraphQLList):
        return []
    if isinstance(graphql_type, GraphQLEnumType):
        return next(iter(graphql_type.values))
    if isinstance(graphql_type, GraphQLInputObjectType):
        value = {
            inner: value_for(field.type, inner)
            for inner, field in graphql_type.fields.items()
            if isinstance(field.type, GraphQLNonNull) and field.default_value is Undefined
        }
        # An update whose input would otherwise be empty changes the name: a real write.
        if not value and "name" in graphql_type.fields:
            value["name"] = value_for(graphql_type.fields["name"].type, "name")
        return value
    assert isinstance(graphql_type, GraphQLScalarType), graphql_type
    scalars: dict[str, Callable[[], Any]] = {
        # Unique, and a valid SKU, slug source and name alike.
        "String": lambda: f"matrix-{next(_seq)}-{uuid.uuid4().hex[:8]}",
        "Int": lambda: 1,
        "Float": lambda: 1.0,
        "Boolean": lambda: True,
        "Decimal": lambda: "1.00",
        "DateTime": lambda: datetime.datetime.now(tz=datetime.UTC).isoformat(),
        "JSON": lambda: {},
    }
    if graphql_type.name not in scalars:
        pytest.fail(f"{name}: no value for the scalar {graphql_type.name}; add one to value_for.")
    return scalars[graphql_type.name]()


def arguments_for(field: Field, **given: Any) -> dict[str, Any]:
    """The field's required arguments, with valid values, and those `given`."""
    values = dict(given)
    for name, argument in field.definition.args.items():
        if name in values:
            continue
        required = isinstance(argument.type, GraphQLNonNull) and argument.default_value is Undefined
        if name == "id" or (required and get_named_type(argument.type).name == "UUID"):
            pytest.fail(f"{field.id}: its {name!r} argument needs an object: give it.")
        if required:
            values[name] = value_for(argument.type, name)
    return values


def document(field: Field, arguments: dict[str, Any]) -> str:
    """One operation calling `field` with `arguments` as variables."""
    declared = ", ".join(
        f"${name}: {field.definition.args[name].type}" for name in sorted(arguments)
    )
    passed = ", ".join(f"{name}: ${name}" for name in sorted(arguments))
    operation = "query" if field.root == "Query" else "mutation"
    signature = f"({declared})" if declared else ""
    call = f"{field.name}({passed})" if passed else field.name
    return f"{operation} Matrix{signature} {{ {call}{selection(field.definition.type)} }}"


def call(client: APIClient, field: Field, **arguments: Any) -> dict[str, Any]:
    """The body of the answer to `field` called with `arguments` (and valid required ones)."""
    values = arguments_for(field, **arguments)
    response = gql(client, document(field, values), values)
    assert response.status_code == 200, response.content
    return response.json()


def field_data(body: dict[str, Any], field: Field) -> Any:
    return (body.get("data") or {}).get(field.name)


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


def assert_answered(body: dict[str, Any], field: Field) -> Any:
    """The field's data, once the call succeeded."""
    assert "errors" not in body, body["errors"]
    assert field_data(body, field) is not None, body
    return field_data(body, field)


def listed_ids(body: dict[str, Any], field: Field) -> set[str]:
    return {edge["node"]["id"] for edge in assert_answered(body, field)["edges"]}


def snapshot(objects: list[Model]) -> list[dict | None]:
    with outcome():
        return [type(obj).objects.filter(pk=obj.pk).values().first() for obj in objects]


def tenant_rows(tenant) -> dict[str, list[dict]]:
    """Every row of the tenant that a call might change, by model."""
    with outcome():
        return {
            model.__name__: list(model.objects.filter(tenant=tenant).order_by("pk").values())
            for model in MODELS
        }


def make(kind: str, world: "Tenancy") -> Model:
    factory = FACTORIES.get(kind)
    if factory is None:
        pytest.fail(f"no factory for {kind!r}: add one to FACTORIES so that it is in the matrix.")
    return factory(world.tenant, world.user)


# --- fixtures ----------------------------------------------------------------------------------


@dataclass
class Tenancy:
    """A tenant and an admin of it (every permission), signed in."""

    tenant: Any
    user: Any
    client: APIClient


def tenancy(name: str) -> Tenancy:
    # Enterprise: a matrix sends many requests, and the rate limits are on.
    tenant = make_tenant(name=name, plan_code="enterprise")
    admin = make_member(tenant, roles=("admin",)).user
    return Tenancy(tenant, admin, client_for(admin, tenant))


@pytest.fixture
def tenant_a() -> Tenancy:
    return tenancy("Tenant A")


@pytest.fixture
def tenant_b() -> Tenancy:
    return tenancy("Tenant B")


# --- the walk itself ---------------------------------------------------------------------------


def test_every_field_is_covered():
    """Each field is a case of the matrix or exempt (not both), and each case has what it
    needs: a factory for its kind, the kind of each UUID it is given."""
    covered = {field.id for field in ID_FIELDS + LISTS}
    covered |= {param.values[0].id for param in REFERENCE_CASES}
    every = {field.id for field in FIELDS}
    assert every - covered - set(EXEMPT) == set(), "neither covered nor exempt"
    assert covered & set(EXEMPT) == set(), "exempt, yet a case: drop the exemption"
    assert set(EXEMPT) <= every, "exemptions of fields the schema no longer has"
    missing = {field.id: field.kind for field in ID_FIELDS + LISTS if field.kind not in FACTORIES}
    assert not missing, f"kinds with no factory: {missing}"
    unknown = {
        f"{field.id}({'.'.join(path)})"
        for field in FIELDS
        for path in field.references()
        if path[-1] not in REFERENCES
    }
    assert not unknown, f"UUID arguments REFERENCES does not name the kind of: {unknown}"


def test_the_walk_finds_the_fields_of_the_contract():
    # A walk that finds nothing would make every case below pass vacuously.
    assert {field.id for field in ID_FIELDS} >= {
        "Query.product",
        "Query.category",
        "Mutation.productUpdate",
        "Mutation.productDelete",
        "Mutation.categoryUpdate",
        "Mutation.categoryDelete",
    }
    assert {field.id for field in LISTS} >= {"Query.products", "Query.categories"}
    assert len(REFERENCE_CASES) >= 4


# --- isolation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ID_FIELDS, ids=lambda field: field.id)
def test_another_tenants_object_is_not_found_and_unchanged(field, tenant_a, tenant_b):
    # Given an object of tenant B, which B has just read (a read leaves a cached answer
    # behind, keyed by the document: A's request is the same document)
    theirs = make(field.kind, tenant_b)
    if field.root == "Query":
        assert_answered(call(tenant_b.client, field, id=str(theirs.id)), field)
    before = snapshot([theirs])

    # When tenant A's admin, who holds every permission, calls the field with its id
    body = call(tenant_a.client, field, id=str(theirs.id))

    # Then it does not exist for A, and B's row is as it was
    assert codes(body)[:1] == ["NOT_FOUND"], body
    assert field_data(body, field) is None
    assert snapshot([theirs]) == before
    # And the same call from B's admin does reach it: the NOT_FOUND was the tenant, not
    # arguments that name nothing.
    assert_answered(call(tenant_b.client, field, id=str(theirs.id)), field)


@pytest.mark.parametrize("field", LISTS, ids=lambda field: field.id)
def test_a_list_shows_nothing_of_another_tenant(field, tenant_a, tenant_b):
    # Given a row of the list's kind in each tenant
    theirs = make(field.kind, tenant_b)
    ours = make(field.kind, tenant_a)

    # And B has read the list (with the document A sends: a cached answer stays B's)
    assert str(theirs.id) in listed_ids(call(tenant_b.client, field, first=MAX_PAGE), field)

    # When A's admin reads the list, as large a page as there is
    listed = listed_ids(call(tenant_a.client, field, first=MAX_PAGE), field)

    # Then A's row is there and B's is not
    assert str(ours.id) in listed
    assert str(theirs.id) not in listed


@pytest.mark.parametrize(("field", "path"), REFERENCE_CASES)
def test_an_argument_naming_another_tenants_object_reaches_nothing(field, path, tenant_a, tenant_b):
    # Given one of B's objects of the kind the argument names, with rows under it (what a
    # filter by it would select, were the tenant not in the way)
    theirs = make(REFERENCES[path[-1]], tenant_b)
    if isinstance(theirs, Category):
        make_product(tenant_b.tenant, category=theirs)
        make_category(tenant_b.tenant, parent=theirs)
    ours = make(field.kind, tenant_a) if field.takes_id else None
    given = {"id": str(ours.id)} if ours is not None else {}
    if len(path) == 2:
        outer = field.definition.args[path[0]].type
        given[path[0]] = {**value_for(outer, path[0]), path[1]: str(theirs.id)}
    else:
        given[path[0]] = str(theirs.id)
    before_a, before_b = tenant_rows(tenant_a.tenant), tenant_rows(tenant_b.tenant)
    if field.is_connection:
        given["first"] = MAX_PAGE

    # When A's admin calls the field with it
    body = call(tenant_a.client, field, **given)

    # Then nothing of B's is shown, read or linked to, and neither tenant changed
    b_ids = {str(row["id"]) for rows in before_b.values() for row in rows}
    if field.root == "Query":
        # A filter naming nothing of A's is refused or selects nothing.
        if "errors" in body:
            assert codes(body)[:1] == ["BAD_USER_INPUT"], body
        elif field.is_connection:
            assert not listed_ids(body, field) & b_ids
    else:
        assert codes(body)[:1] == ["BAD_USER_INPUT"], body
        invalid = {error["field"] for error in body["errors"][0]["extensions"]["errors"]}
        assert path[-1] in invalid, body
        assert field_data(body, field) is None
    assert tenant_rows(tenant_a.tenant) == before_a
    assert tenant_rows(tenant_b.tenant) == before_b
