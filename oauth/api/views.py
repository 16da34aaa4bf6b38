"""Third-party apps over HTTP: a tenant's apps (`oauth_apps.manage`), and the grants a person
gave apps (their own, in the tenant of their token). Thin: input shapes here, rules in
oauth/services.py.

A confidential app's `client_secret` is in the 201 answer of its creation and nowhere else.
"""

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse

from kernel.api.base import IsPerson, TenantViewSet, validated_input
from kernel.fields import StrictBooleanField
from kernel.permissions import Perm
from oauth import services
from oauth.models import App, Consent
from oauth.scopes import all_scopes

MAX_REDIRECT_URIS = 10
LOOPBACK_HOSTS = {"localhost"}

# --- serializers -------------------------------------------------------------------------------


class AppSerializer(serializers.ModelSerializer):
    redirect_uris = serializers.SerializerMethodField()
    confidential = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField(source="created", read_only=True)
    updated_at = serializers.DateTimeField(source="updated", read_only=True)
    scopes = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = App
        fields = [
            "id",
            "name",
            "client_id",
            "redirect_uris",
            "scopes",
            "confidential",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_redirect_uris(self, app: App) -> list[str]:
        return app.redirect_uris.split()

    def get_confidential(self, app: App) -> bool:
        return app.client_type == App.CLIENT_CONFIDENTIAL


class AppCreatedSerializer(AppSerializer):
    """The 201 answer's shape (the document's only: the view builds the body)."""

    # Not read-only, which the document would mark required: a public app has no secret.
    client_secret = serializers.CharField(
        required=False,
        help_text="A confidential app's secret, absent for a public app. Shown in this response "
        "only: store it now.",
    )

    class Meta(AppSerializer.Meta):
        fields = [*AppSerializer.Meta.fields, "client_secret"]
        read_only_fields = AppSerializer.Meta.fields


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RedirectURIField(serializers.CharField):
    """An absolute URI the app's users are sent back to, matched exactly: `https`, or `http` on
    loopback only (RFC 8252); no fragment, no credentials, no wildcard."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 2000)
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def schema_constraints(self) -> dict[str, Any]:
        # What a pattern can say: https, or http on a loopback host.
        return {
            "pattern": r"^(https://[^\s#*@]+|http://(127\.0\.0\.1|\[::1\]|localhost)[:/][^\s#*@]*)$",
            "examples": ["https://app.example/callback", "http://127.0.0.1:8080/callback"],
        }

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        try:
            parts = urlsplit(value)
            host = parts.hostname or ""
        except ValueError as exc:
            raise serializers.ValidationError("Not a URI.") from exc
        if any(character.isspace() for character in value) or not host:
            raise serializers.ValidationError("Must be an absolute URI, without spaces.")
        if parts.scheme == "http":
            if not _is_loopback(host):
                raise serializers.ValidationError("http is allowed on loopback only (RFC 8252).")
        elif parts.scheme != "https":
            raise serializers.ValidationError("Must be https (or http on loopback).")
        if parts.fragment or "#" in value:
            raise serializers.ValidationError("Must not have a fragment.")
        if "@" in parts.netloc:
            raise serializers.ValidationError("Must not carry credentials.")
        if "*" in value:
            raise serializers.ValidationError("Wildcards are not allowed: URIs match exactly.")
        return value


class AppInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    redirect_uris = serializers.ListField(
        child=RedirectURIField(), min_length=1, max_length=MAX_REDIRECT_URIS
    )
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(all_scopes())),
        min_length=1,
        help_text="Tenant permission codes the app may ask for, and openid, profile, email, "
        "offline_access.",
    )
    confidential = StrictBooleanField(
        default=True,
        help_text="A server-side app that keeps a client secret (true), or a public one (a "
        "mobile or single-page app) that has none and relies on PKCE alone (false).",
    )

    def validate_redirect_uris(self, uris: list[str]) -> list[str]:
        # Order kept, duplicates dropped.
        return list(dict.fromkeys(uris))


class AppUpdateSerializer(AppInputSerializer):
    confidential = None


class GrantAppSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    client_id = serializers.CharField()
    tenant = serializers.CharField(source="tenant.name", help_text="The tenant that registered it.")


class GrantSerializer(serializers.ModelSerializer):
    app = GrantAppSerializer(read_only=True)
    scopes = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Consent
        fields = ["id", "app", "scopes", "created_at", "updated_at"]
        read_only_fields = fields


# --- views -------------------------------------------------------------------------------------


class AppViewSet(TenantViewSet):
    """The tenant's third-party apps (docs/oauth.md)."""

    model = App
    serializer_class = AppSerializer
    required_permissions = dict.fromkeys(
        ("list", "retrieve", "create", "update", "partial_update", "destroy"),
        Perm.OAUTH_APPS_MANAGE,
    )

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(AppSerializer(page, many=True).data)

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(AppSerializer(self.get_object()).data)

    @extend_schema(request=AppInputSerializer, responses={201: AppCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Register an app. A confidential app's `client_secret` is in this response only.

        Not idempotent (`Idempotency-Key`) on purpose: replaying the answer would mean storing
        the secret.
        """
        data = validated_input(self, AppInputSerializer)
        app, secret = services.app_create(
            tenant=self.principal.tenant, actor=self.principal, **data
        )
        body = AppSerializer(app).data
        if secret is not None:
            body["client_secret"] = secret
        location = reverse("oauth-app-detail", kwargs={"pk": app.pk}, request=request)
        # The secret must not linger in any cache between here and the client.
        headers = {"Location": location, "Cache-Control": "no-store"}
        return Response(body, status=status.HTTP_201_CREATED, headers=headers)

    @extend_schema(request=AppUpdateSerializer, responses={200: AppSerializer})
    def update(self, request: Request, *args: Any, partial: bool = False, **kwargs: Any):
        """Change the app's name, redirect URIs or scopes. Fewer scopes narrow its tokens at
        their next request."""
        app = self.get_object()
        data = validated_input(self, AppUpdateSerializer, partial=partial)
        app = services.app_update(
            tenant=self.principal.tenant, actor=self.principal, app=app, **data
        )
        return Response(AppSerializer(app).data)

    @extend_schema(request=AppUpdateSerializer, responses={200: AppSerializer})
    def partial_update(self, request: Request, *args: Any, **kwargs: Any):
        return self.update(request, *args, partial=True, **kwargs)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Delete the app: every token it holds, in every tenant, stops working at once."""
        services.app_delete(tenant=self.principal.tenant, app=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class GrantViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """The apps you authorized to act for you in this tenant. Yours alone: a person's own
    sign-in, not an API key nor an app."""

    model = Consent
    serializer_class = GrantSerializer
    permission_classes = [*TenantViewSet.permission_classes, IsPerson]
    required_permissions = {"list": None, "retrieve": None, "destroy": None}

    def scope_queryset(self, queryset):
        return queryset.filter(user_id=self.principal.user.pk).select_related("app", "app__tenant")

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Revoke the grant: the app's tokens for you in this tenant stop working at once."""
        services.consent_revoke(tenant=self.principal.tenant, consent=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
