"""Input and output shapes of the tenant resources. Validation of input lives here; rules in
services.

Output serializers are read-only; input serializers name only the fields a client may write, so
that anything else in a body (`tenant`, `id`, `is_builtin`, `slug`, ...) is ignored.
"""

from django.contrib.auth import get_user_model
from rest_framework import serializers

from accounts.api.serializers import TenantSummarySerializer, UserSerializer
from kernel.api.fields import PermissionCodeField
from kernel.fields import StrictBooleanField
from kernel.tenancy.models import (
    MIN_AUDIT_RETENTION_DAYS,
    MIN_NOTIFICATION_RETENTION_DAYS,
    AuditEvent,
    Invitation,
    Membership,
    Permission,
    Role,
    Tenant,
)
from kernel.tenancy.selectors import permission_codes, role_list
from kernel.validators import validate_json_object


class TenantRoleField(serializers.PrimaryKeyRelatedField):
    """A role of the caller's tenant, by id. Another tenant's role id is simply unknown."""

    # In the words a category's field uses (catalog/inputs.py): one wording everywhere.
    default_error_messages = {
        "does_not_exist": 'Role "{pk_value}" does not exist.',
        "incorrect_type": "Expected a role id (a UUID), got {data_type}.",
    }

    def __init__(self, **kwargs):
        kwargs.setdefault("pk_field", serializers.UUIDField())
        super().__init__(**kwargs)

    def get_queryset(self):
        # Resolved per request, under the caller's tenant: never at import time.
        return role_list(tenant=self.context["tenant"])


# --- permissions -----------------------------------------------------------------------------


class PermissionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Permission
        fields = ["code", "description"]
        read_only_fields = fields


class PermissionPageSerializer(serializers.Serializer):
    """The list shape, for the schema of the one list that is not a viewset's."""

    results = PermissionSerializer(many=True)
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)


# --- roles -----------------------------------------------------------------------------------


class RoleSerializer(serializers.ModelSerializer):
    permissions = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = Role
        fields = [
            "id",
            "name",
            "description",
            "permissions",
            "is_builtin",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class RoleInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=64)
    # PUT replaces the role, so an absent description is emptied; PATCH leaves it as it is.
    description = serializers.CharField(max_length=255, default="", allow_blank=True)
    permissions = serializers.ListField(
        child=PermissionCodeField(), allow_empty=True, max_length=100
    )

    def validate_permissions(self, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - permission_codes())
        if unknown:
            raise serializers.ValidationError(
                f"Unknown permission codes: {', '.join(unknown)}. GET /api/v1/permissions/ "
                "lists them."
            )
        return sorted(set(value))


class RoleSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Role
        fields = ["id", "name"]
        read_only_fields = fields


# --- members ---------------------------------------------------------------------------------


class MemberUserSerializer(serializers.ModelSerializer):
    class Meta:
        model = get_user_model()
        fields = ["id", "email", "name"]
        read_only_fields = fields


class MemberSerializer(serializers.ModelSerializer):
    user = MemberUserSerializer(read_only=True)
    roles = RoleSummarySerializer(many=True, read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "user", "roles", "created_at"]
        read_only_fields = fields


class MemberRolesInputSerializer(serializers.Serializer):
    # PATCH /members/{id}/ replaces the roles: `roles` is required there too
    # (see kernel/openapi.py).
    whole_on_patch = True

    roles = TenantRoleField(many=True, allow_empty=False)

    def validate_roles(self, value: list[Role]) -> list[Role]:
        return list(dict.fromkeys(value))  # a role named twice is granted once


# --- invitations -----------------------------------------------------------------------------


class InvitationSerializer(serializers.ModelSerializer):
    roles = RoleSummarySerializer(many=True, read_only=True)
    invited_by = MemberUserSerializer(read_only=True, allow_null=True)
    status = serializers.ChoiceField(choices=Invitation.Status.choices, read_only=True)

    class Meta:
        model = Invitation
        fields = [
            "id",
            "email",
            "roles",
            "status",
            "invited_by",
            "expires_at",
            "accepted_at",
            "revoked_at",
            "created_at",
        ]
        read_only_fields = fields


class InvitationInputSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    roles = TenantRoleField(many=True, allow_empty=False)

    def validate_roles(self, value: list[Role]) -> list[Role]:
        return list(dict.fromkeys(value))


class InvitationAcceptSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=128, write_only=True)
    password = serializers.CharField(
        max_length=128, required=False, write_only=True, style={"input_type": "password"}
    )
    name = serializers.CharField(max_length=150, required=False, default="", allow_blank=True)


class InvitationAcceptResponseSerializer(serializers.Serializer):
    user = UserSerializer()
    tenant = TenantSummarySerializer()
    access = serializers.CharField()
    refresh = serializers.CharField()


# --- the tenant ------------------------------------------------------------------------------


class TenantSerializer(serializers.ModelSerializer):
    plan = serializers.SlugRelatedField(slug_field="code", read_only=True)
    audit_retention_days = serializers.IntegerField(
        source="audit_retention",
        read_only=True,
        help_text="Days audit events are kept: the tenant's choice, at most the plan's.",
    )
    notification_retention_days = serializers.IntegerField(
        source="notification_retention",
        read_only=True,
        help_text="Days notifications are kept: the tenant's choice, at most the plan's.",
    )
    plan_audit_retention_days = serializers.IntegerField(
        source="plan.audit_retention_days",
        read_only=True,
        help_text="The most the plan keeps audit events, and what it keeps by default.",
    )
    plan_notification_retention_days = serializers.IntegerField(
        source="plan.notification_retention_days",
        read_only=True,
        help_text="The most the plan keeps notifications, and what it keeps by default.",
    )

    class Meta:
        model = Tenant
        fields = [
            "id",
            "name",
            "slug",
            "status",
            "plan",
            "settings",
            "require_mfa",
            "audit_retention_days",
            "notification_retention_days",
            "plan_audit_retention_days",
            "plan_notification_retention_days",
            "created_at",
        ]
        read_only_fields = fields


TENANT_SETTINGS_MAX_BYTES = 16_384
TENANT_SETTINGS_MAX_DEPTH = 5
TENANT_SETTING_NAME_MAX_LENGTH = 100


class TenantInputSerializer(serializers.Serializer):
    """What a tenant may change about itself; slug, status and plan are the operators'."""

    name = serializers.CharField(max_length=200, required=False)
    settings = serializers.DictField(required=False)
    require_mfa = StrictBooleanField(
        required=False,
        help_text="Members who sign in with a password must have a second factor (owner only).",
    )
    # The plan's limit is the service's to check (the plan is read with the tenant's row locked).
    audit_retention_days = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=MIN_AUDIT_RETENTION_DAYS,
        help_text="Keep audit events this many days, at most the plan's; null for the plan's. "
        "Keeping them less long is for owners only.",
    )
    notification_retention_days = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=MIN_NOTIFICATION_RETENTION_DAYS,
        help_text="Keep notifications this many days, at most the plan's; null for the plan's.",
    )

    def validate_settings(self, value: dict) -> dict:
        # Bounded like a product's attributes: they are read, cached and copied with the tenant
        # on every request. Text PostgreSQL's jsonb can store (no NUL, no unpaired surrogate).
        validate_json_object(
            value,
            what="Settings",
            names="Setting names",
            max_bytes=TENANT_SETTINGS_MAX_BYTES,
            max_depth=TENANT_SETTINGS_MAX_DEPTH,
            max_name_length=TENANT_SETTING_NAME_MAX_LENGTH,
        )
        return value


# --- the audit log ---------------------------------------------------------------------------


class AuditEventSerializer(serializers.ModelSerializer):
    changes = serializers.JSONField(
        help_text="What changed, as {field: [old, new]}; secrets are never shown (nor stored)."
    )

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "actor_type",
            "actor_id",
            "actor_label",
            "actor_app_id",
            "actor_app_label",
            "action",
            "target_type",
            "target_id",
            "changes",
            "request_id",
            "ip",
            "user_agent",
            "created_at",
            "prev_hash",
            "hash",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "prev_hash": {"help_text": "The previous event's hash (64 zeros for the first)."},
            "hash": {"help_text": "SHA-256 of the canonical JSON and `prev_hash` (docs/audit.md)."},
        }


class AuditTimeRangeSerializer(serializers.Serializer):
    """`since` and `until`, the latter after the former: the export's parameters (`?format=` is
    content negotiation's), and part of the list's."""

    since = serializers.DateTimeField(required=False, help_text="At or after this time (RFC 3339).")
    until = serializers.DateTimeField(required=False, help_text="Before this time (RFC 3339).")

    def validate(self, attrs):
        since, until = attrs.get("since"), attrs.get("until")
        if since is not None and until is not None and since >= until:
            raise serializers.ValidationError({"until": ["Must be later than since."]})
        return attrs


class AuditEventFilterSerializer(AuditTimeRangeSerializer):
    """The query parameters of the audit log. A bad value is a 400 naming the parameter."""

    actor_id = serializers.UUIDField(required=False)
    actor_type = serializers.ChoiceField(choices=AuditEvent.ActorType.choices, required=False)
    action = serializers.RegexField(
        r"^[a-z0-9_]+(\.[a-z0-9_]+){0,2}(\.\*)?$",
        max_length=100,
        required=False,
        trim_whitespace=False,  # as its pattern says
        help_text="An action (`tenants.member.removed`), or a prefix ending in `.*` "
        "(`tenants.member.*`).",
    )
    target_type = serializers.CharField(max_length=64, required=False)
    target_id = serializers.CharField(max_length=64, required=False)


class AuditVerificationSerializer(serializers.Serializer):
    """What `GET /audit-events/verify/` answers (docs/audit.md, "Verifying")."""

    valid = serializers.BooleanField()
    events = serializers.IntegerField(help_text="How many events were checked.")
    head = serializers.CharField(
        required=False, help_text="The last event's hash, when the chain is valid."
    )
    broken_at = serializers.UUIDField(
        required=False, help_text="The first event that does not check out, when it is not."
    )
    reason = serializers.ChoiceField(
        choices=["prev_hash", "hash", "head"],
        required=False,
        help_text="prev_hash: an event before it was removed or inserted; hash: the event was "
        "altered; head: events are missing at the end of the chain.",
    )
