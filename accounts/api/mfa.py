"""The second factor over HTTP: a person's own TOTP and recovery codes, and the second step of a
sign-in (accounts/mfa/, docs/security.md). Thin: the services do the work.

Only a person signed in themselves manages their second factor (not an API key, not an app
acting for them). Removing it and renewing the recovery codes take a code, and a wrong one is a
failed sign-in: it counts in the same failure windows and, past their limit, is refused (429)
whatever is sent, so that a stolen access token is no way to switch the second factor off.
"""

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response

from accounts.api.serializers import TokenPairSerializer
from accounts.api.views import PublicAPIView, body_field
from accounts.mfa import challenges, services
from accounts.sessions import issue_tokens
from accounts.sso import services as sso
from kernel import ratelimit
from kernel.api.base import IsPerson, TenantAPIView
from kernel.context import tenant_context
from kernel.openapi import problem
from kernel.problems import InvalidInput, Problem, ProblemType
from kernel.tenancy.models import Membership, Tenant

User = get_user_model()
BAD_CODE = problem(400, "The code is missing or not valid (validation-error).")
LOCKED_OUT = problem(429, "Too many failed sign-ins or codes: locked out (rate-limited).")
# Every way an `mfa_token` can be wrong (unknown, expired, spent) reads the same.
INVALID_CHALLENGE = "This sign-in has expired or is not valid: sign in with your password again."


class CodeSerializer(serializers.Serializer):
    code = serializers.CharField(
        max_length=32,
        trim_whitespace=True,
        help_text="A code of the authenticator app (6 digits), or a recovery code (XXXXX-XXXXX) "
        "where one is accepted.",
    )


class TotpStartedSerializer(serializers.Serializer):
    secret = serializers.CharField(help_text="The secret, base32, for typing in by hand.")
    otpauth_url = serializers.CharField(help_text="The same, as authenticator apps read it.")


class RecoveryCodesSerializer(serializers.Serializer):
    recovery_codes = serializers.ListField(
        child=serializers.CharField(),
        help_text="Ten single-use codes, shown this once: keep them somewhere safe.",
    )


class MfaStatusSerializer(serializers.Serializer):
    totp = serializers.BooleanField()
    recovery_codes_remaining = serializers.IntegerField()


class MfaSignInSerializer(serializers.Serializer):
    mfa_token = serializers.CharField(max_length=128)
    code = serializers.CharField(max_length=32)


class _OwnSecondFactor(TenantAPIView):
    permission_classes = [*TenantAPIView.permission_classes, IsPerson]
    # What a person held to setting one up (their tenant requires it) must be able to reach.
    allowed_before_second_factor = True

    def initial(self, request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        if request.method != "GET" and self.principal.sso:
            # The tenant's identity provider speaks for the person in that tenant only; the
            # second factor guards the account everywhere, and is changed by its owner alone.
            raise Problem(
                ProblemType.PERMISSION_DENIED,
                detail="A session begun with single sign-on cannot change the account's second "
                "factor: sign in with your password to do that.",
            )

    def person(self):
        # The principal's user is a cached snapshot: the row, for what the services write.
        return User.objects.get(pk=self.request.user.pk)

    def code(self) -> str:
        serializer = CodeSerializer(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data["code"]

    def checked_as_a_sign_in(self, change):
        """`change(user=…, code=…)` with the person and the body's code, a code check that
        counts as a sign-in: refused while the account or the address is locked out, and a
        wrong code counted as a failure."""
        user = self.person()
        ratelimit.limit_public_request(
            self.request, scope=ratelimit.PublicScope.SIGN_IN, account=user.email
        )
        code = self.code()
        try:
            result = change(user=user, code=code)
        except InvalidInput:
            ratelimit.sign_in_failed(self.request, account=user.email)
            raise
        ratelimit.sign_in_succeeded(self.request, account=user.email)
        return result


class MfaStatusView(_OwnSecondFactor):
    """Whether the person has a second factor, and how many recovery codes they have left."""

    required_permissions = {"get": None}

    @extend_schema(responses={200: MfaStatusSerializer})
    def get(self, request, version):
        return Response(MfaStatusSerializer(services.status(self.person())).data)


class TotpView(_OwnSecondFactor):
    """POST: a new secret for an authenticator app (in force once confirmed). DELETE: remove the
    second factor, with a code."""

    required_permissions = {"post": None, "delete": None}

    @extend_schema(
        request=None,
        responses={
            201: TotpStartedSerializer,
            **problem(409, "A second factor is active already (conflict)."),
        },
    )
    def post(self, request, version):
        started = services.totp_begin(user=self.person())
        return Response(TotpStartedSerializer(started).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=CodeSerializer,
        responses={
            204: None,
            **BAD_CODE,
            **problem(409, "No second factor is active (conflict)."),
            **LOCKED_OUT,
        },
    )
    def delete(self, request, version):
        self.checked_as_a_sign_in(services.totp_remove)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TotpConfirmView(_OwnSecondFactor):
    """Put the new secret in force with a first code; the recovery codes, shown this once."""

    required_permissions = {"post": None}

    @extend_schema(
        request=CodeSerializer,
        responses={
            200: RecoveryCodesSerializer,
            **BAD_CODE,
            **problem(409, "No second factor waits for confirmation (conflict)."),
        },
    )
    def post(self, request, version):
        codes = services.totp_confirm(user=self.person(), code=self.code())
        return Response(RecoveryCodesSerializer({"recovery_codes": codes}).data)


class RecoveryCodesView(_OwnSecondFactor):
    """Ten new recovery codes, with a code; the old ones stop working."""

    required_permissions = {"post": None}

    @extend_schema(
        request=CodeSerializer,
        responses={
            200: RecoveryCodesSerializer,
            **BAD_CODE,
            **problem(409, "No second factor is active (conflict)."),
            **LOCKED_OUT,
        },
    )
    def post(self, request, version):
        codes = self.checked_as_a_sign_in(services.recovery_codes_regenerate)
        return Response(RecoveryCodesSerializer({"recovery_codes": codes}).data)


class TokenMfaView(PublicAPIView):
    """The second step of a sign-in: the `mfa_token` the password step answered with, and a code
    (TOTP or recovery). Limited and locked out as the password step is, on the same account."""

    checks_credentials = True
    rate_limit_scope = ratelimit.PublicScope.SIGN_IN

    def rate_limited_account(self, request) -> str | None:
        # Read once, here: the lockouts need the account, and the sign-in below the same two.
        self.challenge = challenges.pending(body_field(request, "mfa_token"))
        self.person = None
        if self.challenge is not None:
            self.person = User.objects.filter(pk=self.challenge.user_id, is_active=True).first()
        return self.person.email if self.person is not None else None

    @extend_schema(
        request=MfaSignInSerializer,
        responses={200: TokenPairSerializer},
    )
    def post(self, request, version):
        serializer = MfaSignInSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, code = serializer.validated_data["mfa_token"], serializer.validated_data["code"]
        challenge, user = self.challenge, self.person
        if challenge is None:
            raise exceptions.AuthenticationFailed(INVALID_CHALLENGE)
        tenant = Tenant.objects.filter(pk=challenge.tenant_id, deleted_at__isnull=True).first()
        if user is None or tenant is None or not _member(user, tenant):
            raise exceptions.AuthenticationFailed(INVALID_CHALLENGE)
        if not services.verify_code(user=user, code=code):
            ratelimit.sign_in_failed(request, account=user.email)
            raise exceptions.AuthenticationFailed(services.INVALID_CODE)
        if not challenges.spend(token):
            raise exceptions.AuthenticationFailed(INVALID_CHALLENGE)
        if not tenant.is_active:
            raise Problem(ProblemType.TENANT_SUSPENDED, detail="This tenant is suspended.")
        ratelimit.sign_in_succeeded(request, account=user.email)
        sso.ensure_password_sign_in_allowed(user=user, tenant=tenant, via="api", record=True)
        return Response(issue_tokens(user=user, tenant=tenant))


def _member(user, tenant) -> bool:
    with tenant_context(tenant.id):
        return Membership.objects.filter(user=user).exists()
