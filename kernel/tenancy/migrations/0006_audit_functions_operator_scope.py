"""The audit log's database functions, hardened (a finding of the source review,
docs/security.md).

Before, the three SECURITY DEFINER functions were executable by PUBLIC and ran as the tables'
owner, a superuser in many deployments, to whom row-level security does not apply: the
application's role, in no scope at all, could prune every tenant's old events. Now:

- each function refuses to run outside the operator scope (`app.operator_scope`, the setting the
  row-level security policies read), whoever calls it;
- they are owned by a role of their own (`<DATABASE_APP_ROLE>_audit`: no login, no superuser, no
  BYPASSRLS), so row-level security applies inside them too; `manage.py migrate` makes that role,
  gives it the functions and grants EXECUTE to the application's role only, revoking it from
  PUBLIC (kernel/tenancy/rls.py, every time it runs);
- the append-only trigger lets a DELETE through only for the functions' owner, with the prune flag
  set: the schema owner can no longer delete either.

Their search path stays pinned to the schema. SQLite, the embedded default, has none of this.
"""

from django.db import migrations

OPERATOR_SCOPE_CHECK = """
    IF current_setting('app.operator_scope', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'audit events are deleted in the operator scope only'
            USING ERRCODE = 'insufficient_privilege';
    END IF;"""

TRIGGER_FUNCTION = """
CREATE OR REPLACE FUNCTION tenants_auditevent_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND current_setting('app.audit_prune', true) = 'on'
       AND current_user = (
           SELECT pg_get_userbyid(proowner) FROM pg_proc
           WHERE proname = 'tenants_auditevent_prune'
       )
    THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit events are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""
PRUNE_FUNCTION = """
CREATE OR REPLACE FUNCTION {name}(cutoff timestamptz) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
    deleted bigint;
BEGIN{scope_check}
    IF cutoff IS NULL OR cutoff > now() - interval '1 day' THEN
        RAISE EXCEPTION 'audit events less than a day old are never pruned'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('app.audit_prune', 'on', true);
    DELETE FROM {table} WHERE created_at < cutoff;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM set_config('app.audit_prune', '', true);
    RETURN deleted;
END
$$
"""
PURGE_TENANT_FUNCTION = """
CREATE OR REPLACE FUNCTION tenants_auditevent_purge_tenant(tenant uuid) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
    deleted bigint;
BEGIN{scope_check}
    IF NOT EXISTS (
        SELECT 1 FROM tenants_tenant WHERE id = tenant AND deleted_at IS NOT NULL
    ) THEN
        RAISE EXCEPTION 'only a deleted tenant''s audit events are purged'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('app.audit_prune', 'on', true);
    DELETE FROM tenants_auditevent WHERE tenant_id = tenant;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM set_config('app.audit_prune', '', true);
    RETURN deleted;
END
$$
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT quote_ident(current_schema())")
        (schema,) = cursor.fetchone()
    # params=None: the bodies hold `%` signs that are not placeholders.
    schema_editor.execute(TRIGGER_FUNCTION, params=None)
    for name, table in (
        ("tenants_auditevent_prune", "tenants_auditevent"),
        ("tenants_platformauditevent_prune", "tenants_platformauditevent"),
    ):
        schema_editor.execute(
            PRUNE_FUNCTION.format(
                name=name, table=table, schema=schema, scope_check=OPERATOR_SCOPE_CHECK
            ),
            params=None,
        )
    schema_editor.execute(
        PURGE_TENANT_FUNCTION.format(schema=schema, scope_check=OPERATOR_SCOPE_CHECK),
        params=None,
    )


class Migration(migrations.Migration):
    dependencies = [("tenants", "0005_platformauditevent")]

    # Backwards leaves the hardened functions in place: nothing should undo a security fix.
    operations = [migrations.RunPython(forward, migrations.RunPython.noop, elidable=False)]
