"""Retention per tenant (kernel/retention.py, docs/audit.md "Retention"): the plan sets how long
a tenant's audit events and notifications are kept, the tenant may keep them less long.

On PostgreSQL, the audit log's prune becomes per tenant: `tenants_auditevent_prune_tenants(
tenants, cutoffs)` deletes each tenant's events older than its own cut-off, the cut-off the
prune job anchored the tenant's hash chain at. Like the other audit functions (migration 0006)
it runs in the operator scope only, refuses a cut-off less than a day old, and sets the prune
flag for its own statement; and whatever cut-off it is given, it never deletes an event the
tenant's retention still keeps (the days read here, in the same statement): a caller can delete
less than it asked, never more. It is owned by the audit functions' role like them
(kernel/tenancy/rls.py), the only role the append-only trigger lets delete.
"""

import django.core.validators
from django.db import migrations, models

# The seeded plans' retentions (kernel/tenancy/reference_data.py): audit events, notifications.
# No plan keeps audit events for less than the year every tenant kept before, so that the first
# prune after this migration deletes nothing a tenant had yesterday.
PLAN_RETENTION = {"free": (365, 30), "pro": (730, 90), "enterprise": (2555, 365)}

PRUNE_TENANTS_FUNCTION = """
CREATE OR REPLACE FUNCTION tenants_auditevent_prune_tenants(tenants uuid[], cutoffs timestamptz[])
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
    deleted bigint;
BEGIN
    IF current_setting('app.operator_scope', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'audit events are deleted in the operator scope only'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF cardinality(tenants) IS DISTINCT FROM cardinality(cutoffs) THEN
        RAISE EXCEPTION 'one cut-off per tenant'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(cutoffs) AS c(cutoff)
               WHERE c.cutoff IS NULL OR c.cutoff > now() - interval '1 day') THEN
        RAISE EXCEPTION 'audit events less than a day old are never pruned'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('app.audit_prune', 'on', true);
    DELETE FROM tenants_auditevent e
    USING unnest(tenants, cutoffs) AS c(tenant_id, cutoff), tenants_tenant t, tenants_plan p
    WHERE t.id = c.tenant_id
      AND p.id = t.plan_id
      AND e.tenant_id = c.tenant_id
      AND e.created_at < LEAST(
          c.cutoff,
          now() - make_interval(days => LEAST(
              COALESCE(t.audit_retention_days, p.audit_retention_days), p.audit_retention_days
          ))
      );
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM set_config('app.audit_prune', '', true);
    RETURN deleted;
END
$$
"""


def set_the_plans_retention(apps, schema_editor):
    """The seeded plans take their own retention; a plan an operator made keeps the fields'
    defaults (today's: a year of audit events)."""
    plan_model = apps.get_model("tenants", "Plan")
    for code, (audit_days, notification_days) in PLAN_RETENTION.items():
        plan_model.objects.filter(code=code).update(
            audit_retention_days=audit_days, notification_retention_days=notification_days
        )


def create_prune_function(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT quote_ident(current_schema())")
        (schema,) = cursor.fetchone()
    # params=None: the body holds no placeholders, and must not be read for any.
    schema_editor.execute(PRUNE_TENANTS_FUNCTION.format(schema=schema), params=None)


def drop_prune_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "DROP FUNCTION IF EXISTS tenants_auditevent_prune_tenants(uuid[], timestamptz[])"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0010_audit_hash_chain"),
    ]

    operations = [
        migrations.AddField(
            model_name="plan",
            name="audit_retention_days",
            field=models.PositiveIntegerField(
                default=365,
                validators=[django.core.validators.MinValueValidator(7)],
            ),
        ),
        migrations.AddField(
            model_name="plan",
            name="notification_retention_days",
            field=models.PositiveIntegerField(
                default=90,
                validators=[django.core.validators.MinValueValidator(1)],
            ),
        ),
        migrations.AddField(
            model_name="tenant",
            name="audit_retention_days",
            field=models.PositiveIntegerField(
                blank=True,
                null=True,
                validators=[django.core.validators.MinValueValidator(7)],
            ),
        ),
        migrations.AddField(
            model_name="tenant",
            name="notification_retention_days",
            field=models.PositiveIntegerField(
                blank=True,
                null=True,
                validators=[django.core.validators.MinValueValidator(1)],
            ),
        ),
        migrations.AddConstraint(
            model_name="plan",
            constraint=models.CheckConstraint(
                condition=models.Q(audit_retention_days__gte=7),
                name="plan_audit_retention_min",
            ),
        ),
        migrations.AddConstraint(
            model_name="plan",
            constraint=models.CheckConstraint(
                condition=models.Q(notification_retention_days__gte=1),
                name="plan_notification_retention_min",
            ),
        ),
        migrations.AddConstraint(
            model_name="tenant",
            constraint=models.CheckConstraint(
                condition=models.Q(audit_retention_days__gte=7),
                name="tenant_audit_retention_min",
            ),
        ),
        migrations.AddConstraint(
            model_name="tenant",
            constraint=models.CheckConstraint(
                condition=models.Q(notification_retention_days__gte=1),
                name="tenant_notification_retention_min",
            ),
        ),
        migrations.RunPython(set_the_plans_retention, migrations.RunPython.noop),
        migrations.RunPython(create_prune_function, drop_prune_function, elidable=False),
    ]
