"""Erasure's way into the append-only audit logs (kernel/audit_chain.py `rewrite`,
kernel/erasure.py): two SECURITY DEFINER functions, `tenants_auditevent_erase(jsonb)` and
`tenants_platformauditevent_erase(jsonb)`, which set the person-naming fields (actor, target,
changes, address, user agent) and, in a tenant's log, the re-chained hashes, of the events
given. Like the prune functions (migration 0006) they run in the operator scope only, are owned
by the audit role and executable by the application's role alone (kernel/tenancy/rls.py).

The append-only trigger lets such an UPDATE through only for that owner, with the erasure flag
set, and only if what an event *is* stays: its id, tenant, action, time, actor type and target
type. Anything else is refused as before; so is any UPDATE from anyone else.
"""

from django.db import migrations

TRIGGER_FUNCTION = """
CREATE OR REPLACE FUNCTION tenants_auditevent_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    functions_owner name := (
        SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname = 'tenants_auditevent_prune'
    );
BEGIN
    IF TG_OP = 'DELETE'
       AND current_setting('app.audit_prune', true) = 'on'
       AND current_user = functions_owner
    THEN
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE'
       AND current_setting('app.audit_erasure', true) = 'on'
       AND current_user = functions_owner
       AND NEW.id = OLD.id
       AND NEW.action = OLD.action
       AND NEW.created_at = OLD.created_at
       AND NEW.actor_type = OLD.actor_type
       AND NEW.target_type = OLD.target_type
       AND (to_jsonb(NEW) -> 'tenant_id') IS NOT DISTINCT FROM (to_jsonb(OLD) -> 'tenant_id')
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit events are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""

ERASE_FUNCTION = """
CREATE OR REPLACE FUNCTION {name}(events jsonb) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
    changed bigint;
BEGIN
    IF current_setting('app.operator_scope', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'audit events are pseudonymised in the operator scope only'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM set_config('app.audit_erasure', 'on', true);
    UPDATE {table} e
    SET actor_id = r.actor_id,
        actor_label = r.actor_label,
        target_id = r.target_id,
        changes = r.changes,
        ip = r.ip,
        user_agent = r.user_agent{hashes}
    FROM jsonb_to_recordset(events) AS r(
        id uuid, actor_id uuid, actor_label text, target_id text, changes jsonb, ip inet,
        user_agent text, prev_hash text, hash text
    )
    WHERE e.id = r.id;
    GET DIAGNOSTICS changed = ROW_COUNT;
    PERFORM set_config('app.audit_erasure', '', true);
    RETURN changed;
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
    for name, table, hashes in (
        (
            "tenants_auditevent_erase",
            "tenants_auditevent",
            ",\n        prev_hash = r.prev_hash,\n        hash = r.hash",
        ),
        ("tenants_platformauditevent_erase", "tenants_platformauditevent", ""),
    ):
        schema_editor.execute(
            ERASE_FUNCTION.format(name=name, table=table, schema=schema, hashes=hashes),
            params=None,
        )


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS tenants_auditevent_erase(jsonb)")
        schema_editor.execute("DROP FUNCTION IF EXISTS tenants_platformauditevent_erase(jsonb)")


class Migration(migrations.Migration):
    dependencies = [("tenants", "0013_tenant_export_permission")]

    operations = [migrations.RunPython(forward, backward, elidable=False)]
