"""API keys over HTTP: create (the key is in that answer only), list, retrieve, revoke.

Thin: input in serializers, rules in accounts.services. Every action needs `apikeys.manage`, an
API key included: a key manages keys only if it was given that code.
"""

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.response import Response
from rest_framework.reverse import reverse

from accounts import services
from accounts.api import serializers as s
from accounts.models import ApiKey
from kernel.api.base import TenantViewSet
from kernel.permissions import Perm


class ApiKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """The tenant's unrevoked keys, newest first; a revoked key is gone from here (404)."""

    model = ApiKey
    serializer_class = s.ApiKeySerializer
    required_permissions = {
        "list": Perm.APIKEYS_MANAGE,
        "retrieve": Perm.APIKEYS_MANAGE,
        "create": Perm.APIKEYS_MANAGE,
        "destroy": Perm.APIKEYS_MANAGE,
    }

    def scope_queryset(self, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        return queryset.unrevoked().order_by("-created_at")

    @extend_schema(request=s.ApiKeyInputSerializer, responses={201: s.ApiKeyCreatedSerializer})
    def create(self, request, *args, **kwargs):
        """Create a key. Its `permissions` must be codes you hold. The `key` is shown once.

        Not idempotent on purpose: replaying the answer would mean storing the key.
        """
        serializer = s.ApiKeyInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        api_key, key = services.api_key_create(
            tenant=self.principal.tenant, actor=self.principal, **serializer.validated_data
        )
        body = s.ApiKeyCreatedSerializer(api_key).data | {"key": key}
        location = reverse("api-key-detail", kwargs={"pk": api_key.pk}, request=request)
        # The key must not linger in any cache between here and the client.
        headers = {"Location": location, "Cache-Control": "no-store"}
        return Response(body, status=status.HTTP_201_CREATED, headers=headers)

    @extend_schema(responses={204: None})
    def destroy(self, request, *args, **kwargs):
        """Revoke the key: refused from the next request on, by every server."""
        services.api_key_revoke(tenant=self.principal.tenant, api_key=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
