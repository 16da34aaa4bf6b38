"""Categories through HTTP: CRUD, slugs, the tree and its guards, permissions and isolation."""

import uuid

import pytest

from catalog.models import Category, Product
from tests.catalog_helpers import (
    CATEGORIES,
    category_url,
    client_without_catalog_read,
    make_category,
    make_product,
    viewer_client,
)
from tests.factories import make_tenant
from tests.helpers import (
    assert_not_found_for_every_method,
    assert_problem,
    client_for,
    error_fields,
    outcome,
    owner_of,
    tasks_run_inline,
)

# The pro plan: its per-credential rate limit leaves room for the many requests of one test.
pytestmark = [pytest.mark.django_db, pytest.mark.tenant(plan_code="pro")]

CATEGORY_FIELDS = {"id", "name", "slug", "parent", "created_at", "updated_at"}


def stored(category_id) -> Category | None:
    with outcome():
        return Category.objects.filter(pk=category_id).first()


def category_count(tenant) -> int:
    with outcome():
        return Category.objects.filter(tenant=tenant).count()


def test_create_returns_the_category_with_a_slug_from_its_name(tenant, editor):
    response = editor.post(CATEGORIES, {"name": "Crème Brûlée & Co"}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == CATEGORY_FIELDS
    assert body["name"] == "Crème Brûlée & Co"
    assert body["slug"] == "creme-brulee-co"
    assert body["parent"] is None
    assert response["Location"].endswith(category_url(body["id"]))
    assert response["ETag"]
    assert editor.get(response["Location"]).json() == body


def test_create_under_a_parent_and_list(tenant, editor):
    parent = make_category(tenant, name="Clothes")

    response = editor.post(
        CATEGORIES, {"name": "Shirts", "slug": "shirts", "parent": str(parent.id)}, format="json"
    )

    assert response.json()["parent"] == str(parent.id)
    listed = editor.get(CATEGORIES).json()
    assert [item["name"] for item in listed["results"]] == ["Clothes", "Shirts"]
    children = editor.get(CATEGORIES, {"parent": parent.id}).json()["results"]
    assert [item["slug"] for item in children] == ["shirts"]


def test_put_patch_and_delete(tenant, editor):
    category = make_category(tenant, name="Old")

    put = editor.put(category_url(category.id), {"name": "New Name"}, format="json")
    assert put.status_code == 200, put.content
    assert (put.json()["name"], put.json()["slug"]) == ("New Name", "new-name")

    patch = editor.patch(category_url(category.id), {"slug": "custom"}, format="json")
    assert (patch.json()["name"], patch.json()["slug"]) == ("New Name", "custom")

    assert editor.delete(category_url(category.id)).status_code == 204
    assert stored(category.id) is None


def test_a_duplicate_slug_is_a_conflict_but_not_across_tenants(tenant, editor):
    make_category(make_tenant(), name="Shoes")
    first = editor.post(CATEGORIES, {"name": "Shoes"}, format="json")

    second = editor.post(CATEGORIES, {"name": "Other", "slug": "shoes"}, format="json")

    assert first.status_code == 201
    assert_problem(second, 409, "conflict")
    assert category_count(tenant) == 1


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"name"}),
        ({"name": ""}, {"name"}),
        ({"name": "x" * 201}, {"name"}),
        ({"name": 5}, {"name"}),
        ({"name": "OK", "slug": "not a slug"}, {"slug"}),
        ({"name": "東京"}, {"slug"}),  # nothing to derive a slug from: ask for one
        ({"name": "OK", "parent": "nope"}, {"parent"}),
        ({"name": "OK", "parent": str(uuid.uuid4())}, {"parent"}),
    ],
)
def test_bad_input_is_a_validation_error(tenant, editor, body, fields):
    assert error_fields(editor.post(CATEGORIES, body, format="json")) == fields
    assert category_count(tenant) == 0


def test_a_parent_of_another_tenant_does_not_exist(tenant, editor):
    foreign = make_category(make_tenant())

    response = editor.post(CATEGORIES, {"name": "X", "parent": str(foreign.id)}, format="json")

    body = assert_problem(response, 400, "validation-error")
    assert body["errors"][0]["message"] == f'Category "{foreign.id}" does not exist.'


def test_the_tree_cannot_get_a_cycle(tenant, editor):
    root = make_category(tenant, name="Root")
    child = make_category(tenant, name="Child", parent=root)
    grandchild = make_category(tenant, name="Grandchild", parent=child)

    for new_parent in (root, child, grandchild):
        response = editor.patch(
            category_url(root.id), {"parent": str(new_parent.id)}, format="json"
        )
        assert error_fields(response) == {"parent"}
    assert stored(root.id).parent_id is None
    # Moving a leaf elsewhere is fine.
    moved = editor.patch(category_url(grandchild.id), {"parent": str(root.id)}, format="json")
    assert moved.json()["parent"] == str(root.id)


def test_a_category_in_use_cannot_be_deleted(tenant, editor):
    parent = make_category(tenant)
    make_category(tenant, parent=parent)
    with_products = make_category(tenant)
    make_product(tenant, category=with_products)

    for category in (parent, with_products):
        body = assert_problem(editor.delete(category_url(category.id)), 409, "conflict")
        assert "subcategories or products" in body["detail"]
        assert stored(category.id) is not None


def test_a_viewer_reads_and_cannot_write(tenant):
    category = make_category(tenant, name="Keep")
    client = viewer_client(tenant)

    assert client.get(CATEGORIES).status_code == 200
    assert client.get(category_url(category.id)).status_code == 200
    assert_problem(client.post(CATEGORIES, {"name": "N"}, format="json"), 403)
    assert_problem(client.patch(category_url(category.id), {"name": "N"}, format="json"), 403)
    assert_problem(client.delete(category_url(category.id)), 403)
    assert stored(category.id).name == "Keep"


def test_without_catalog_read_nothing_is_readable(tenant):
    category = make_category(tenant)
    client = client_without_catalog_read(tenant)

    assert_problem(client.get(CATEGORIES), 403, "permission-denied")
    assert_problem(client.get(category_url(category.id)), 403, "permission-denied")


def test_categories_need_a_credential(api_client):
    assert_problem(api_client.get(CATEGORIES), 401, "not-authenticated")


def test_another_tenants_category_is_not_found_for_every_method(tenant, editor):
    foreign = make_category(make_tenant(), name="Theirs")

    assert_not_found_for_every_method(
        editor,
        category_url(foreign.id),
        {"put": {"name": "Mine"}, "patch": {"name": "Mine"}, "delete": None},
    )

    assert stored(foreign.id).name == "Theirs"
    assert editor.get(CATEGORIES).json()["results"] == []


def test_ordering_and_sparse_fields(tenant, editor):
    make_category(tenant, name="B")
    make_category(tenant, name="A")

    by_name_desc = editor.get(CATEGORIES, {"ordering": "-name", "fields": "name"}).json()

    assert by_name_desc["results"] == [{"name": "B"}, {"name": "A"}]
    assert error_fields(editor.get(CATEGORIES, {"ordering": "parent"})) == {"ordering"}
    assert error_fields(editor.get(CATEGORIES, {"fields": "tenant"})) == {"fields"}


def test_deleting_the_tenant_purges_its_whole_catalog(tenant, django_capture_on_commit_callbacks):
    # Given a tenant with a category tree and products in it, and a bystander tenant
    root = make_category(tenant)
    leaf = make_category(tenant, parent=make_category(tenant, parent=root))
    make_product(tenant, category=leaf)
    make_product(tenant, category=root)
    bystander = make_tenant()
    kept = make_product(bystander, category=make_category(bystander))
    owner = client_for(owner_of(tenant), tenant)

    # When the owner deletes the tenant and the purge runs
    with tasks_run_inline(), django_capture_on_commit_callbacks(execute=True):
        response = owner.delete("/api/v1/tenant/")

    # Then its catalog is gone, RESTRICT notwithstanding, and the bystander's is untouched
    assert response.status_code == 204, response.content
    with outcome():
        assert not Category.objects.filter(tenant_id=tenant.id).exists()
        assert not Product.objects.filter(tenant_id=tenant.id).exists()
        assert Category.objects.filter(tenant=bystander).count() == 1
        assert Product.objects.filter(pk=kept.pk).exists()


def test_the_admin_keeps_the_tree_a_tree_and_saves_through_the_services(tenant, superuser_client):
    root = make_category(tenant, name="Root")
    child = make_category(tenant, name="Child", parent=root)
    foreign = make_category(make_tenant(), name="Foreign")
    url = f"/admin/catalog/category/{root.id}/change/"

    form = superuser_client.get(url)
    cycle = superuser_client.post(url, {"name": "Root", "slug": root.slug, "parent": child.id})
    across = superuser_client.post(url, {"name": "Root", "slug": root.slug, "parent": foreign.id})
    renamed = superuser_client.post(url, {"name": "Renamed", "slug": root.slug, "parent": ""})

    assert form.status_code == 200
    assert str(foreign.id) not in form.content.decode()  # only the tenant's own categories
    assert cycle.status_code == 200  # the form again, with the error
    assert "below itself" in cycle.content.decode()
    assert across.status_code == 200
    assert renamed.status_code == 302
    after = stored(root.id)
    assert (after.name, after.parent_id, after.version) == ("Renamed", None, 2)
