"""Sign-up, tokens and passwords. Thin: validation in serializers, writes in services."""

import uuid

from django.contrib.auth import get_user_model
from django.utils.encoding import force_str
from django.utils.http import urlsafe_base64_decode
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, permissions, status
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from accounts import services
from accounts.api import serializers as s
from accounts.sessions import SESSION_CLAIM, TENANT_CLAIM
from core.problems import Problem, ProblemType
from notifications.realtime import disconnect_session
from tenants.api.base import TenantAPIView
from tenants.principals import revoke_session
from tenants.selectors import tenants_of_user

User = get_user_model()


class PublicAPIView(APIView):
    """An endpoint that takes no credential (the credential is what it hands out)."""

    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]


class SignupView(PublicAPIView):
    @extend_schema(request=s.SignupSerializer, responses={201: s.SignupResponseSerializer})
    def post(self, request, version):
        serializer = s.SignupSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user, tenant, tokens = services.signup(**serializer.validated_data)
        body = s.SignupResponseSerializer({"user": user, "tenant": tenant, **tokens}).data
        return Response(
            body, status=status.HTTP_201_CREATED, headers={"Location": "/api/v1/auth/me/"}
        )


class TokenObtainView(TokenObtainPairView):
    authentication_classes: list = []
    checks_credentials = True

    @extend_schema(request=s.TokenObtainSerializer, responses={200: s.TokenPairSerializer})
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)


class TokenRefreshRotateView(TokenRefreshView):
    authentication_classes: list = []
    checks_credentials = True

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
        except (TokenError, KeyError, ValueError) as exc:
            raise exceptions.AuthenticationFailed("Invalid token.") from exc
        refresh.blacklist()
        revoke_session(tenant_id=tenant_id, session_id=session_id)
        disconnect_session(session_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(TenantAPIView):
    required_permissions = {"get": None}

    @extend_schema(responses={200: s.MeSerializer})
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


class PasswordChangeView(TenantAPIView):
    required_permissions = {"post": None}

    @extend_schema(request=s.PasswordChangeSerializer, responses={200: s.TokenPairSerializer})
    def post(self, request, version):
        # The principal's user is a cached snapshot without the password hash: read the row.
        user = User.objects.get(pk=request.user.pk)
        serializer = s.PasswordChangeSerializer(data=request.data, context={"user": user})
        serializer.is_valid(raise_exception=True)
        tokens = services.password_change(
            user=user,
            tenant=self.principal.tenant,
            new_password=serializer.validated_data["new_password"],
        )
        return Response(tokens)


class PasswordResetRequestView(PublicAPIView):
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
        except (ValueError, TypeError, User.DoesNotExist) as exc:
            raise Problem(
                ProblemType.VALIDATION_ERROR, detail="The reset link is invalid or expired."
            ) from exc
        services.password_reset_confirm(
            user=user, token=data["token"], new_password=data["new_password"]
        )
        return Response(status=status.HTTP_204_NO_CONTENT)
