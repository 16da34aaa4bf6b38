"""Sign-up, tokens and passwords. Thin: validation in serializers, writes in services.

Every endpoint here is limited per client address, and per account where the request names one
(kernel/ratelimit/public.py), before its body is validated: a refused attempt costs no password
hash.
"""

import uuid
from collections.abc import Mapping

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.encoding import force_str
from django.utils.http import urlsafe_base64_decode
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, permissions, status
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenBackendError, TokenError
from rest_framework_simplejwt.state import token_backend
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from accounts import erasure, services
from accounts.api import serializers as s
from accounts.sessions import SESSION_CLAIM, TENANT_CLAIM
from kernel import ratelimit
from kernel.api.base import IsPerson, TenantAPIView
from kernel.openapi import problem
from kernel.problems import Problem, ProblemType
from kernel.tenancy.selectors import tenants_of_user

User = get_user_model()


def body_field(request, name: str) -> str:
    data = request.data
    value = data.get(name) if isinstance(data, Mapping) else None
    return value.strip() if isinstance(value, str) else ""


def _email_in_body(request) -> str | None:
    return body_field(request, "email").lower() or None


class PublicLimitsMixin:
    """Limits per client address and, for the endpoints that name one, per account.

    `rate_limit_scope` picks the endpoint's limits; `rate_limited_account()` names the account
    (an email, or the user a refresh token speaks for) from the body.
    """

    rate_limit_scope = ratelimit.PublicScope.OTHER
    # Limited in initial() instead, with the account that DRF's throttles cannot see.
    throttle_classes: list = []

    def initial(self, request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        try:
            account = self.rate_limited_account(request)
        except (exceptions.ParseError, exceptions.UnsupportedMediaType):
            # The handler would fail the same way on the body: charge the address, then fail.
            ratelimit.limit_public_request(request, scope=self.rate_limit_scope, account=None)
            raise
        ratelimit.limit_public_request(request, scope=self.rate_limit_scope, account=account)

    def rate_limited_account(self, request) -> str | None:
        return None


class PublicAPIView(PublicLimitsMixin, APIView):
    """An endpoint that takes no credential (the credential is what it hands out)."""

    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]


class SignupView(PublicAPIView):
    """Sign-up. Whether it is the email or the slug that is taken, the 409 says the same: the
    answer does not tell which emails have an account. Limited per address and per email."""

    rate_limit_scope = ratelimit.PublicScope.SIGNUP

    def rate_limited_account(self, request) -> str | None:
        return _email_in_body(request)

    @extend_schema(
        request=s.SignupSerializer,
        responses={
            201: s.SignupResponseSerializer,
            **problem(409, "The email has an account, or the tenant slug is taken (conflict)."),
        },
    )
    def post(self, request, version):
        serializer = s.SignupSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user, tenant, tokens = services.signup(**serializer.validated_data)
        body = s.SignupResponseSerializer({"user": user, "tenant": tenant, **tokens}).data
        # Absolute, as every other Location the API sends.
        location = reverse("auth-me", request=request)
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": location})


class TokenObtainView(PublicLimitsMixin, TokenObtainPairView):
    """Sign-in. Failures count against the (address, account) pair, the address and the
    account; a pair, address or account that has failed too often is locked out (429), whatever
    the password."""

    authentication_classes: list = []
    checks_credentials = True
    rate_limit_scope = ratelimit.PublicScope.SIGN_IN

    def rate_limited_account(self, request) -> str | None:
        return _email_in_body(request)

    @extend_schema(request=s.TokenObtainSerializer, responses={200: s.TokenPairSerializer})
    def post(self, request, *args, **kwargs):
        account = self.rate_limited_account(request)
        try:
            response = super().post(request, *args, **kwargs)
        except exceptions.AuthenticationFailed:
            # Every sign-in failure answers the same 401, and counts the same.
            ratelimit.sign_in_failed(request, account=account)
            raise
        ratelimit.sign_in_succeeded(request, account=account)
        return response


class TokenRefreshRotateView(PublicLimitsMixin, TokenRefreshView):
    authentication_classes: list = []
    checks_credentials = True
    rate_limit_scope = ratelimit.PublicScope.REFRESH

    def rate_limited_account(self, request) -> str | None:
        # Only a token we signed names a user to count against: anyone could write another's id
        # into a forged one. The signature is checked here; the rest, database included, later.
        try:
            payload = token_backend.decode(body_field(request, "refresh"), verify=True)
        except TokenBackendError:
            return None
        user_id = payload.get("user_id")
        return str(user_id) if user_id else None

    @extend_schema(responses={200: s.TokenPairSerializer})
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)


class LogoutView(PublicAPIView):
    """Revokes the session the refresh token belongs to: that token and its access tokens."""

    checks_credentials = True

    @extend_schema(request=s.LogoutSerializer, responses={204: None})
    def post(self, request, version):
        serializer = s.LogoutSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            refresh = RefreshToken(serializer.validated_data["refresh"])
            session_id = refresh[SESSION_CLAIM]
            tenant_id = uuid.UUID(refresh[TENANT_CLAIM])
            user_id = uuid.UUID(str(refresh["user_id"]))
        except (TokenError, KeyError, ValueError) as exc:
            raise exceptions.AuthenticationFailed("Invalid token.") from exc
        services.logout(
            refresh=refresh, tenant_id=tenant_id, session_id=session_id, user_id=user_id
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


def password_checked(request, serializer_class, *, checked_field: str):
    """The signed-in person's row and the body `serializer_class` validated, its password field
    checked like a sign-in's: past the sign-in failure windows a 429 whatever is sent, a wrong
    password counted in them, a right one clearing them."""
    # The principal's user is a cached snapshot without the password hash: read the row.
    user = User.objects.get(pk=request.user.pk)
    ratelimit.limit_public_request(request, scope=ratelimit.PublicScope.SIGN_IN, account=user.email)
    serializer = serializer_class(data=request.data, context={"user": user})
    if not serializer.is_valid():
        if checked_field in serializer.errors:
            ratelimit.sign_in_failed(request, account=user.email)
        raise exceptions.ValidationError(serializer.errors)
    ratelimit.sign_in_succeeded(request, account=user.email)
    return user, serializer.validated_data


class MeView(TenantAPIView):
    """The person signed in (GET), or their account erased (DELETE, with their password: GDPR
    article 17, accounts/erasure.py). An API key gets a 403: it is nobody's account.

    Erasure deactivates the account at once (every token refused from the next request) and
    erases it in a job: 202. The password is a password check like a sign-in's, counted in the
    same failure windows. The last owner of a tenant is refused (409) until the tenant has
    another owner or is deleted."""

    permission_classes = [*TenantAPIView.permission_classes, IsPerson]
    required_permissions = {"get": None, "delete": None}
    # Who they are and what they may do, even while held to setting up a second factor.
    allowed_before_second_factor = True

    @extend_schema(responses={200: s.MeSerializer}, auth=[{"bearerAuth": []}])
    def get(self, request, version):
        principal = self.principal
        body = {
            "user": request.user,
            "tenant": principal.tenant,
            "roles": sorted(principal.roles),
            "permissions": sorted(principal.permissions),
            "tenants": [
                tenant
                for tenant in tenants_of_user(user_id=request.user.id)
                if tenant.id != principal.tenant.id
            ],
        }
        return Response(s.MeSerializer(body).data)

    @extend_schema(
        request=s.AccountErasureSerializer,
        responses={
            202: s.AccountErasureAcceptedSerializer,
            **problem(400, "The password is missing or wrong (validation-error); nothing changed."),
            **problem(409, "The person is the last owner of a tenant (conflict); nothing changed."),
        },
        auth=[{"bearerAuth": []}],
    )
    def delete(self, request, version):
        user, _ = password_checked(request, s.AccountErasureSerializer, checked_field="password")
        erasure.erasure_request(user=user)
        body = {
            "status": "erasing",
            "detail": "Your account is deactivated; its data is being erased.",
        }
        return Response(s.AccountErasureAcceptedSerializer(body).data, status=202)


class PasswordChangeView(TenantAPIView):
    """A person's own password. An API key has none: 403.

    The current password is a password check like a sign-in: wrong guesses count in the same
    failure windows (the address and the account, each alone and together), and past their limit
    the change is refused (429) whatever is sent, so that a stolen access or refresh token is no
    unlimited oracle for the password, and no way to a permanent takeover."""

    permission_classes = [*TenantAPIView.permission_classes, IsPerson]
    required_permissions = {"post": None}

    @extend_schema(
        request=s.PasswordChangeSerializer,
        responses={200: s.TokenPairSerializer},
        auth=[{"bearerAuth": []}],
    )
    def post(self, request, version):
        user, data = password_checked(
            request, s.PasswordChangeSerializer, checked_field="current_password"
        )
        tokens = services.password_change(
            user=user,
            tenant=self.principal.tenant,
            new_password=data["new_password"],
        )
        return Response(tokens)


class PasswordResetRequestView(PublicAPIView):
    """Limited per address and per account (email): past either, a 429, whether or not the
    address has an account, so that the limit reveals nothing either."""

    rate_limit_scope = ratelimit.PublicScope.PASSWORD_RESET

    def rate_limited_account(self, request) -> str | None:
        return _email_in_body(request)

    @extend_schema(request=s.PasswordResetRequestSerializer, responses={202: None})
    def post(self, request, version):
        serializer = s.PasswordResetRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.password_reset_request(email=serializer.validated_data["email"])
        # The same answer whether or not the address is known.
        return Response(status=status.HTTP_202_ACCEPTED)


class PasswordResetConfirmView(PublicAPIView):
    @extend_schema(request=s.PasswordResetConfirmSerializer, responses={204: None})
    def post(self, request, version):
        serializer = s.PasswordResetConfirmSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            user = User.objects.get(
                pk=force_str(urlsafe_base64_decode(data["uid"])), is_active=True
            )
        except (ValueError, TypeError, DjangoValidationError, User.DoesNotExist) as exc:
            # A uid that decodes to something other than a UUID is as invalid as an unknown one.
            raise Problem(
                ProblemType.VALIDATION_ERROR, detail="The reset link is invalid or expired."
            ) from exc
        services.password_reset_confirm(
            user=user, token=data["token"], new_password=data["new_password"]
        )
        return Response(status=status.HTTP_204_NO_CONTENT)
