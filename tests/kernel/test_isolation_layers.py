"""The three layers of tenant isolation, each proven on its own.

Each test is written so that it fails if its layer alone is removed: the manager test runs with
row-level security out of the way, and the row-level security tests use raw SQL, which no
manager sees.
"""

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.utils import ProgrammingError

from kernel.context import NoTenantInContext, operator_scope, tenant_context
from kernel.tenancy.models import CrossTenantWrite, Role, TenantOwnedModel
from kernel.tenancy.rls import POLICY_NAME, tenant_owned_tables
from tests.factories import make_tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_tenants():
    return make_tenant(name="Alpha"), make_tenant(name="Beta")


def role_names_by_raw_sql() -> set[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tenant_id::text, name FROM tenants_role")
        return set(cursor.fetchall())


# --- Layer 1: the tenant-aware manager ------------------------------------------------------


def test_manager_fails_closed_without_a_tenant(two_tenants):
    with pytest.raises(NoTenantInContext):
        Role.objects.all()
    with pytest.raises(NoTenantInContext):
        Role.objects.filter(name="owner").exists()


def test_manager_filters_to_the_tenant_in_context_even_without_row_security(two_tenants):
    alpha, beta = two_tenants
    # As the schema owner (a superuser here) row-level security does not apply: only the
    # manager stands between tenants.
    with connection.schema_owner(), tenant_context(alpha.id):
        assert {role.tenant_id for role in Role.objects.all()} == {alpha.id}
        assert not Role.objects.filter(tenant_id=beta.id).exists()


def test_related_object_access_is_scoped_too(two_tenants):
    alpha, beta = two_tenants
    with operator_scope("test setup"):
        beta_role = Role.objects.get(tenant=beta, name="owner")
    with connection.schema_owner(), tenant_context(alpha.id):
        # The base manager is the scoped one, so a foreign row is not reachable through a
        # relation either.
        assert not Role._base_manager.filter(pk=beta_role.pk).exists()


# --- Layer 2: the tenant comes from the context, never from the caller ----------------------


def test_creation_takes_the_tenant_from_the_context(two_tenants):
    alpha, _ = two_tenants
    with tenant_context(alpha.id):
        role = Role.objects.create(name="auditor", permissions=["audit.read"])
    assert role.tenant_id == alpha.id


def test_a_row_cannot_be_written_into_another_tenant(two_tenants):
    alpha, beta = two_tenants
    with tenant_context(alpha.id):
        with pytest.raises(CrossTenantWrite):
            Role.objects.create(name="intruder", tenant_id=beta.id)
        with pytest.raises(CrossTenantWrite):
            Role.objects.bulk_create([Role(name="intruder", tenant_id=beta.id)])
        role = Role.objects.get(name="viewer")
        role.tenant_id = beta.id
        with pytest.raises(CrossTenantWrite):
            role.save()
    with operator_scope("check"):
        assert not Role.objects.filter(name="intruder").exists()
        assert Role.objects.get(pk=role.pk).tenant_id == alpha.id


def test_creation_without_a_tenant_fails_closed():
    with pytest.raises(NoTenantInContext):
        Role.objects.create(name="orphan")


# --- Layer 3: PostgreSQL row-level security -------------------------------------------------


def test_the_application_role_is_neither_superuser_nor_bypassrls():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        user, is_superuser, bypasses_rls = cursor.fetchone()
    assert (is_superuser, bypasses_rls) == (False, False), user


def test_raw_sql_without_a_tenant_sees_no_rows(two_tenants):
    assert role_names_by_raw_sql() == set()


def test_raw_sql_with_a_tenant_sees_none_of_the_others(two_tenants):
    alpha, beta = two_tenants
    with tenant_context(alpha.id):
        rows = role_names_by_raw_sql()
    assert rows
    assert {tenant for tenant, _ in rows} == {str(alpha.id)}
    with tenant_context(beta.id):
        assert {tenant for tenant, _ in role_names_by_raw_sql()} == {str(beta.id)}


def test_raw_sql_cannot_insert_into_another_tenant(two_tenants):
    alpha, beta = two_tenants
    with (
        tenant_context(alpha.id),
        pytest.raises(ProgrammingError),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "INSERT INTO tenants_role (id, tenant_id, name, description, permissions,"
            " is_builtin, created_at, updated_at)"
            " VALUES (gen_random_uuid(), %s, 'smuggled', '', '[]', false, now(), now())",
            [str(beta.id)],
        )


def test_raw_sql_cannot_move_a_row_to_another_tenant(two_tenants):
    alpha, beta = two_tenants
    with (
        tenant_context(alpha.id),
        pytest.raises(ProgrammingError),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE tenants_role SET tenant_id = %s", [str(beta.id)])


def test_leaving_a_tenant_scope_inside_a_transaction_hides_its_rows_again(two_tenants):
    alpha, _ = two_tenants
    with transaction.atomic():
        with tenant_context(alpha.id):
            assert role_names_by_raw_sql()
        assert role_names_by_raw_sql() == set()


def test_operator_scope_sees_every_tenant(two_tenants):
    alpha, beta = two_tenants
    with operator_scope("test"):
        tenants = {tenant for tenant, _ in role_names_by_raw_sql()}
    assert {str(alpha.id), str(beta.id)} <= tenants


def test_every_tenant_owned_table_has_forced_row_security_and_the_policy():
    tables = tenant_owned_tables()
    assert "tenants_role" in tables
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_policies p ON p.tablename = c.relname"
            " WHERE c.relrowsecurity AND c.relforcerowsecurity AND p.policyname = %s",
            [POLICY_NAME],
        )
        protected = {name for (name,) in cursor.fetchall()}
    assert set(tables) <= protected


def test_every_table_pointing_at_tenant_data_carries_the_tenant():
    """A join table between tenant-owned rows without tenant_id would escape the policies."""
    from django.apps import apps

    for model in apps.get_models(include_auto_created=True):
        points_at_tenant_data = any(
            field.is_relation
            and field.many_to_one
            and issubclass(field.related_model, TenantOwnedModel)
            for field in model._meta.fields
        )
        if points_at_tenant_data:
            assert issubclass(model, TenantOwnedModel), model


def test_unique_constraints_of_tenant_owned_tables_include_the_tenant(two_tenants):
    alpha, _ = two_tenants
    # The same role name lives in both tenants (created by tenant_create) ...
    with operator_scope("check"):
        assert Role.objects.filter(name="owner").count() >= 2
    # ... but not twice in one.
    with tenant_context(alpha.id), pytest.raises(IntegrityError), transaction.atomic():
        Role.objects.create(name="Owner")


def test_a_tenant_owned_model_with_a_plain_manager_stops_start_up(monkeypatch):
    from django.db import models

    from kernel.tenancy.checks import tenant_owned_models_are_scoped

    assert tenant_owned_models_are_scoped() == []
    plain = models.Manager()
    plain.model = Role
    # What `objects = SomeQuerySet.as_manager()` on a tenant-owned model would amount to.
    monkeypatch.setitem(Role._meta.__dict__, "default_manager", plain)
    errors = tenant_owned_models_are_scoped()
    assert [(error.id, error.obj) for error in errors] == [("tenants.E001", Role)]


def test_a_failed_nested_block_that_changed_scope_rolls_back_cleanly(two_tenants):
    """Leaving a scope after an error inside a savepoint must not poison the outer transaction."""
    alpha, beta = two_tenants
    with transaction.atomic():
        with pytest.raises(IntegrityError), transaction.atomic(), tenant_context(beta.id):
            Role.objects.create(name="Owner")  # duplicate: the savepoint is rolled back
        with tenant_context(alpha.id):
            assert Role.objects.filter(name="owner").count() == 1
