"""What exists on PostgreSQL only: GIN indexes for search and tags, and same-tenant foreign keys.

- The full-text index is built through the schema editor from the same `search_vector()`
  expression the list query uses, so that the index and the query cannot drift apart
  (tests/test_catalog_products.py checks the plan uses it).
- The composite foreign keys make "a product's category and a category's parent belong to the
  same tenant" a rule of the database, under the serializers that already enforce it: a bug that
  tried to link across tenants would fail at commit. (Django cannot declare a composite foreign
  key; PostgreSQL checks it at commit, like Django's own deferred ones.)

The models do not declare any of this: the embedded SQLite default has no GIN, searches with
icontains and filters tags with json_each.
"""

from django.contrib.postgres.indexes import GinIndex
from django.db import migrations

from catalog.models import search_vector

SAME_TENANT_SQL = [
    "ALTER TABLE catalog_category ADD CONSTRAINT category_tenant_id_key UNIQUE (tenant_id, id)",
    "ALTER TABLE catalog_category ADD CONSTRAINT category_parent_same_tenant"
    " FOREIGN KEY (tenant_id, parent_id) REFERENCES catalog_category (tenant_id, id)"
    " DEFERRABLE INITIALLY DEFERRED",
    "ALTER TABLE catalog_product ADD CONSTRAINT product_category_same_tenant"
    " FOREIGN KEY (tenant_id, category_id) REFERENCES catalog_category (tenant_id, id)"
    " DEFERRABLE INITIALLY DEFERRED",
]
DROP_SAME_TENANT_SQL = [
    "ALTER TABLE catalog_product DROP CONSTRAINT product_category_same_tenant",
    "ALTER TABLE catalog_category DROP CONSTRAINT category_parent_same_tenant",
    "ALTER TABLE catalog_category DROP CONSTRAINT category_tenant_id_key",
]


def indexes() -> list[GinIndex]:
    return [
        GinIndex(search_vector(), name="product_search_gin"),
        # jsonb_path_ops: smaller and faster for the only operator ?tag= uses, containment (@>).
        GinIndex(fields=["tags"], name="product_tags_gin", opclasses=["jsonb_path_ops"]),
    ]


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    product = apps.get_model("catalog", "Product")
    for index in indexes():
        schema_editor.add_index(product, index)
    for statement in SAME_TENANT_SQL:
        schema_editor.execute(statement)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for statement in DROP_SAME_TENANT_SQL:
        schema_editor.execute(statement)
    product = apps.get_model("catalog", "Product")
    for index in indexes():
        schema_editor.remove_index(product, index)


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
