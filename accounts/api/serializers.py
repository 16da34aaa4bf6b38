import uuid
from typing import Any

from django.contrib.auth import authenticate, get_user_model, password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Q
from django.utils import timezone
from rest_framework import exceptions, serializers
from rest_framework_simplejwt import serializers as jwt_serializers
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.utils import get_md5_hash_password

from accounts.mfa import challenges
from accounts.mfa import services as mfa
from accounts.models import ApiKey
from accounts.sessions import SSO_CLAIM, TENANT_CLAIM, issue_tokens
from accounts.sso import services as sso
from kernel.api.fields import PermissionCodeField
from kernel.context import operator_scope, tenant_context
from kernel.openapi import NOT_ONLY_DIGITS_PATTERN
from kernel.problems import Problem, ProblemType
from kernel.tenancy.models import Membership, Tenant
from kernel.tenancy.selectors import permission_codes

User = get_user_model()

# One message for every way a sign-in can fail, so that nothing can be probed through it.
BAD_CREDENTIALS = "No active account found with these credentials."


def validate_new_password(password: str, *, user) -> str:
    try:
        password_validation.validate_password(password, user)
    except DjangoValidationError as exc:
        raise serializers.ValidationError(list(exc.messages)) from exc
    return password


class NewPasswordField(serializers.CharField):
    """A password being set: the document states what the password validators in settings
    refuse that a schema can say (too short; only digits); the serializer runs them all."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 128)
        kwargs.setdefault("write_only", True)
        kwargs.setdefault("style", {"input_type": "password"})
        super().__init__(**kwargs)

    def schema_constraints(self) -> dict[str, Any]:
        constraints: dict[str, Any] = {}
        for validator in password_validation.get_default_password_validators():
            if isinstance(validator, password_validation.MinimumLengthValidator):
                constraints["minLength"] = max(validator.min_length, 1)
            elif isinstance(validator, password_validation.NumericPasswordValidator):
                constraints["pattern"] = NOT_ONLY_DIGITS_PATTERN
        return constraints


class UserSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "email", "name", "date_joined"]
        read_only_fields = fields


class TenantSummarySerializer(serializers.ModelSerializer):
    plan = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = Tenant
        fields = ["id", "name", "slug", "status", "plan", "created_at"]
        read_only_fields = fields


class SignupSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    password = NewPasswordField()
    name = serializers.CharField(max_length=150, required=False, default="", allow_blank=True)
    tenant_name = serializers.CharField(max_length=200)
    # Not trimmed: the document gives the slug's pattern, and " acme" does not match it.
    tenant_slug = serializers.SlugField(max_length=63, required=False, trim_whitespace=False)

    def validate(self, attrs):
        candidate = User(email=attrs["email"], name=attrs.get("name", ""))
        try:
            validate_new_password(attrs["password"], user=candidate)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({"password": exc.detail}) from exc
        return attrs


class SignupResponseSerializer(serializers.Serializer):
    user = UserSerializer()
    tenant = TenantSummarySerializer()
    access = serializers.CharField()
    refresh = serializers.CharField()


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


class TokenObtainSerializer(serializers.Serializer):
    """`{email, password, tenant?}` → a token pair for one membership.

    Wrong credentials, an unknown tenant and a tenant the user is not a member of all give the
    same 401, so membership cannot be probed.
    """

    email = serializers.CharField(max_length=254, write_only=True)
    password = serializers.CharField(
        max_length=128, write_only=True, style={"input_type": "password"}
    )
    tenant = serializers.SlugField(
        max_length=63,
        required=False,
        write_only=True,
        trim_whitespace=False,
        help_text="The tenant to sign in to, by its slug or its id; needed when you belong to "
        "several.",
    )

    def validate(self, attrs):
        user = authenticate(
            self.context.get("request"), email=attrs["email"], password=attrs["password"]
        )
        if user is None or not user.is_active:
            raise exceptions.AuthenticationFailed(BAD_CREDENTIALS)
        with operator_scope("finding the tenants a signing-in user belongs to"):
            memberships = Membership.objects.select_related("tenant").filter(
                user=user, tenant__deleted_at__isnull=True
            )
            if "tenant" in attrs:
                memberships = memberships.filter(_tenant_named(attrs["tenant"]))
            candidates = list(memberships[:2])
        if not candidates:
            raise exceptions.AuthenticationFailed(BAD_CREDENTIALS)
        if len(candidates) > 1:
            raise serializers.ValidationError(
                {"tenant": ["You belong to several tenants: name one by its slug."]}
            )
        tenant = candidates[0].tenant
        if not tenant.is_active:
            raise Problem(ProblemType.TENANT_SUSPENDED, detail="This tenant is suspended.")
        second_step = mfa.is_active(user)
        # Recorded (an owner's break-glass sign-in) only where the tokens are issued.
        sso.ensure_password_sign_in_allowed(
            user=user, tenant=tenant, via="api", record=not second_step
        )
        if second_step:
            # No tokens yet: the second step (POST /auth/token/mfa/) takes the code.
            raise Problem(
                ProblemType.MFA_REQUIRED,
                extra={"mfa_token": challenges.issue(user_id=user.pk, tenant_id=tenant.pk)},
            )
        return issue_tokens(user=user, tenant=tenant)


def _tenant_named(value: str) -> Q:
    """A membership's tenant by its slug, or by its id (a slug is never a UUID's shape)."""
    try:
        return Q(tenant__id=uuid.UUID(value))
    except ValueError:
        return Q(tenant__slug=value)


class TokenRefreshSerializer(jwt_serializers.TokenRefreshSerializer):
    """Rotation, after checking that the session may still go on: the user is active with the
    same password, still a member, and the tenant is live."""

    def validate(self, attrs):
        try:
            refresh = RefreshToken(attrs["refresh"])
            tenant_id = refresh[TENANT_CLAIM]
            user = User.objects.get(pk=refresh["user_id"], is_active=True)
        except (TokenError, KeyError, ValueError, User.DoesNotExist) as exc:
            raise exceptions.AuthenticationFailed("Invalid token.") from exc
        if refresh.get("pwd") != get_md5_hash_password(user.password):
            raise exceptions.AuthenticationFailed("Invalid token.")
        with tenant_context(tenant_id):
            membership = Membership.objects.select_related("tenant").filter(user=user).first()
        if membership is None or membership.tenant.deleted_at is not None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if not membership.tenant.is_active:
            raise Problem(ProblemType.TENANT_SUSPENDED, detail="This tenant is suspended.")
        if refresh.get(SSO_CLAIM) is not True:
            # A password session ends at its next refresh once the tenant enforces single
            # sign-on for the person's domain.
            sso.ensure_password_sign_in_allowed(
                user=user, tenant=membership.tenant, via="api", record=False
            )
        return super().validate(attrs)


class LogoutSerializer(serializers.Serializer):
    refresh = serializers.CharField(write_only=True)


class MeSerializer(serializers.Serializer):
    user = UserSerializer()
    tenant = TenantSummarySerializer()
    roles = serializers.ListField(child=serializers.CharField())
    permissions = serializers.ListField(child=serializers.CharField())
    tenants = TenantSummarySerializer(many=True)


class AccountErasureSerializer(serializers.Serializer):
    password = serializers.CharField(
        max_length=128, write_only=True, help_text="The person's current password."
    )

    def validate_password(self, value):
        if not self.context["user"].check_password(value):
            raise serializers.ValidationError("The password is wrong.")
        return value


class AccountErasureAcceptedSerializer(serializers.Serializer):
    status = serializers.CharField(read_only=True, help_text="`erasing`.")
    detail = serializers.CharField(read_only=True)


class PasswordChangeSerializer(serializers.Serializer):
    current_password = serializers.CharField(max_length=128, write_only=True)
    new_password = NewPasswordField()

    def validate_current_password(self, value):
        if not self.context["user"].check_password(value):
            raise serializers.ValidationError("The current password is wrong.")
        return value

    def validate_new_password(self, value):
        return validate_new_password(value, user=self.context["user"])


class PasswordResetRequestSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)


class PasswordResetConfirmSerializer(serializers.Serializer):
    uid = serializers.CharField(max_length=64)
    token = serializers.CharField(max_length=128)
    new_password = NewPasswordField()


# --- API keys ----------------------------------------------------------------------------------


class ApiKeySerializer(serializers.ModelSerializer):
    """A key as listed: never its secret, never its hash."""

    permissions = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "permissions", "expires_at", "last_used_at", "created_at"]
        read_only_fields = fields


class ApiKeyCreatedSerializer(ApiKeySerializer):
    """The answer to its creation: the only response that carries the key itself."""

    key = serializers.CharField(
        read_only=True, help_text="The whole key. Shown here once: store it now."
    )

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields


class ApiKeyInputSerializer(serializers.Serializer):
    """What a client may set; anything else in the body (tenant, prefix, ...) is ignored."""

    name = serializers.CharField(max_length=100)
    permissions = serializers.ListField(
        child=PermissionCodeField(), allow_empty=False, max_length=100
    )
    expires_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="In the future; none: the key never expires."
    )

    def validate_permissions(self, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - permission_codes())
        if unknown:
            raise serializers.ValidationError(
                f"Unknown permission codes: {', '.join(unknown)}. GET /api/v1/permissions/ "
                "lists them."
            )
        return sorted(set(value))

    def validate_expires_at(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("Must be in the future.")
        return value
