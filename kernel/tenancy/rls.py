"""Row-level security on PostgreSQL: the restricted role, its grants and the per-table policies.

`manage.py migrate` (kernel/tenancy/management/commands/migrate.py) runs all of this after the
migrations, as the schema owner, so that a new tenant-owned model is protected the moment its
table exists: nobody has to remember a line. The test suite checks every table
(`test_every_tenant_owned_table_has_forced_row_security_and_the_policy`).
"""

from django.apps import apps
from django.conf import settings
from psycopg import sql

from kernel.tenancy.models import TenantOwnedModel

POLICY_NAME = "tenant_isolation"
# NULLIF: after a transaction that set it, the setting reads '' rather than NULL, and ''::uuid
# would raise instead of matching nothing.
POLICY_PREDICATE = (
    "tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid"
    " OR current_setting('app.operator_scope', true) = 'on'"
)


def tenant_owned_tables() -> list[str]:
    return sorted(
        model._meta.db_table
        for model in apps.get_models(include_auto_created=True)
        if issubclass(model, TenantOwnedModel)
    )


def ensure_app_role(cursor) -> None:
    """Create the restricted role if it is missing and let the login role switch to it."""
    _ensure_role(cursor, settings.DATABASE_APP_ROLE)


def _ensure_role(cursor, name: str) -> None:
    """A role without login, superuser or BYPASSRLS, which the login role is a member of (so that
    it can switch to it, or give it objects)."""
    role = sql.Identifier(name)
    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name])
    if cursor.fetchone() is None:
        # Several test databases may migrate at once in one cluster; the loser of the race
        # finds the role made.
        cursor.execute(
            sql.SQL(
                "DO $$ BEGIN CREATE ROLE {} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB "
                "NOCREATEROLE; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; "
                "END $$"
            ).format(role)
        )
    cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    (is_superuser,) = cursor.fetchone()
    if not is_superuser:
        cursor.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))


def grant_app_role(cursor) -> None:
    role = sql.Identifier(settings.DATABASE_APP_ROLE)
    for statement in (
        "GRANT USAGE ON SCHEMA public TO {}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}",
        "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
        "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {}",
    ):
        cursor.execute(sql.SQL(statement).format(role))


def enable_row_level_security(cursor, table: str) -> None:
    name = sql.Identifier(table)
    cursor.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(name))
    # FORCE: the table's owner is subject to the policy too.
    cursor.execute(sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(name))
    # Re-created every time so that a change of the predicate reaches existing tables.
    cursor.execute(
        sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(sql.Identifier(POLICY_NAME), name)
    )
    cursor.execute(
        sql.SQL("CREATE POLICY {policy} ON {table} USING ({p}) WITH CHECK ({p})").format(
            policy=sql.Identifier(POLICY_NAME), table=name, p=sql.SQL(POLICY_PREDICATE)
        )
    )


# The audit log's SECURITY DEFINER functions (migrations tenants/0004 to 0006, 0011, 0014): owned
# by a role of their own, so that row-level security applies inside them (their owner is neither
# superuser nor BYPASSRLS), and executable by the application's role alone.
AUDIT_FUNCTIONS = (
    "tenants_auditevent_prune(timestamptz)",
    "tenants_platformauditevent_prune(timestamptz)",
    "tenants_auditevent_purge_tenant(uuid)",
    "tenants_auditevent_prune_tenants(uuid[], timestamptz[])",
    "tenants_auditevent_erase(jsonb)",
    "tenants_platformauditevent_erase(jsonb)",
)


def audit_role_name() -> str:
    return f"{settings.DATABASE_APP_ROLE}_audit"


def secure_audit_functions(cursor) -> None:
    """The audit functions' owner role, what it may touch, and who may call them."""
    app_role = sql.Identifier(settings.DATABASE_APP_ROLE)
    audit_role = sql.Identifier(audit_role_name())
    _ensure_role(cursor, audit_role_name())
    for statement in (
        # CREATE too: a login that is not a superuser can only give the functions to a role
        # that may create in their schema. Nobody logs in as this role, and the application's
        # role cannot switch to it.
        "GRANT USAGE, CREATE ON SCHEMA public TO {audit}",
        # UPDATE for erasure's pseudonymisation alone: the trigger refuses any other.
        "GRANT SELECT, UPDATE, DELETE ON tenants_auditevent, tenants_platformauditevent TO {audit}",
        # The per-tenant prune reads each tenant's retention, and its plan's.
        "GRANT SELECT ON tenants_tenant, tenants_plan TO {audit}",
    ):
        cursor.execute(sql.SQL(statement).format(audit=audit_role))
    for function in AUDIT_FUNCTIONS:
        cursor.execute("SELECT to_regprocedure(%s)", [function])
        if cursor.fetchone()[0] is None:
            continue  # a database migrated only part of the way: its later functions come later
        name = sql.SQL(function)  # constants of this module, not input
        cursor.execute(sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(name, audit_role))
        cursor.execute(sql.SQL("REVOKE ALL ON FUNCTION {} FROM PUBLIC").format(name))
        cursor.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(name, app_role))


def apply_row_level_security(connection) -> None:
    """Idempotent: the roles, their grants and a policy on every tenant-owned table."""
    existing = set(connection.introspection.table_names())
    with connection.cursor() as cursor:
        ensure_app_role(cursor)
        if "tenants_auditevent" in existing:
            secure_audit_functions(cursor)
        for table in tenant_owned_tables():
            if table in existing:
                enable_row_level_security(cursor, table)
        grant_app_role(cursor)
