from django.apps import AppConfig
from django.db.backends.signals import connection_created

from kernel.logging import install_slow_query_log


class KernelConfig(AppConfig):
    """The platform kernel (docs/architecture.md). Its label stays `core`: the outbox's table
    and migrations carry it."""

    name = "kernel"
    label = "core"

    def ready(self) -> None:
        # Every connection of every alias, in web processes and in Celery workers alike.
        connection_created.connect(install_slow_query_log, dispatch_uid="kernel.slow_query_log")
        require_strings_in_string_fields()
        # Imported here: an app's module is loaded before the models these modules use.
        from kernel import audit, erasure, jobs, propagation
        from kernel.exports import registry, resources
        from kernel.exports.services import PERSONAL_EXPORT, TENANT_EXPORT, ExportAction
        from kernel.tenants import TenancyAction

        # What travels with a task message besides the request id: the tenant, the audit actor.
        propagation.register()
        audit.register()
        audit.register_actions(TenancyAction)
        audit.register_actions(ExportAction)
        audit.register_actions(erasure.ErasureAction)
        erasure.register(erasure.erase_kernel_data)
        jobs.register_kind(TENANT_EXPORT)
        jobs.register_kind(PERSONAL_EXPORT)
        registry.register_tenant_resource("members", resources.member_rows)
        registry.register_tenant_resource("roles", resources.role_rows)
        registry.register_tenant_resource("invitations", resources.invitation_rows)
        registry.register_tenant_resource("audit_events", resources.audit_event_rows)
        registry.register_personal_resource("memberships", resources.personal_membership_rows)
        registry.register_personal_resource("audit_events", resources.personal_audit_event_rows)


def require_strings_in_string_fields() -> None:
    """A string field of the API takes a JSON string, and nothing else.

    DRF's CharField (and so EmailField, SlugField, RegexField, URLField...) turns a number into
    its text: `{"name": 0}` would be stored as "0", where the OpenAPI document promises a 400 for
    anything that is not a string. Query strings and form fields are strings already, so only
    JSON bodies see the difference. Patched once here, for every serializer, declared or
    generated from a model, rather than in each of them.
    """
    from rest_framework import fields

    if getattr(fields.CharField.to_internal_value, "requires_strings", False):
        return
    lenient = fields.CharField.to_internal_value

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return lenient(self, data)

    to_internal_value.requires_strings = True
    fields.CharField.to_internal_value = to_internal_value
