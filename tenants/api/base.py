"""The base of every tenant API view: scoping that a subclass cannot forget.

- The tenant comes from the credential (TenantJWTAuthentication or an API key), never from the
  URL or the body.
- Querysets come from the model's tenant-scoped manager, and subclasses cannot override
  `get_queryset`/`get_object`: they refine the scoped queryset in `scope_queryset()`. The rare
  view that truly needs its own must name the override `dangerously_get_queryset`, which
  stands out in review.
- Each view declares the permission code each action needs in `required_permissions`;
  an action missing from the map is a configuration error, not an open door.
- The whole request runs in one transaction, so row-level security's tenant setting is applied
  once, and an error response rolls back whatever was written.
"""

from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from rest_framework import permissions, viewsets
from rest_framework.views import APIView

from tenants.permissions import Perm
from tenants.principal import Principal

_SEALED = ("get_queryset", "get_object")


class IsTenantPrincipal(permissions.BasePermission):
    """Authenticated through a tenant credential (not, say, an operator's admin session)."""

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, Principal)


class HasRequiredPermission(permissions.BasePermission):
    """The caller holds the permission code the view declares for this action."""

    def has_permission(self, request, view) -> bool:
        required = required_permission(view, request)
        return required is None or request.auth.has_permission(required)


def required_permission(view, request) -> Perm | None:
    if request.method == "OPTIONS" or request.method not in view.allowed_methods:
        # Nothing to guard: DRF answers an unrouted method with 405 and `Allow`.
        return None
    mapping: Mapping[str, Perm | None] = getattr(view, "required_permissions", None) or {}
    method = "get" if request.method == "HEAD" else request.method.lower()
    key = getattr(view, "action", None) or method
    if key not in mapping:
        raise ImproperlyConfigured(
            f"{type(view).__name__}.required_permissions does not name {key!r}."
        )
    return mapping[key]


class TenantScopedMixin:
    permission_classes = [IsTenantPrincipal, HasRequiredPermission]
    required_permissions: Mapping[str, Perm | None] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__module__ == __name__:  # the bases below define them, once
            return
        for name in _SEALED:
            if name in cls.__dict__:
                raise TypeError(
                    f"{cls.__name__} overrides {name}(): refine scope_queryset() instead, or "
                    f"name it dangerously_{name} if it must bypass tenant scoping."
                )

    def dispatch(self, request, *args, **kwargs):
        with transaction.atomic():
            response = super().dispatch(request, *args, **kwargs)
            if response.status_code >= 400:
                transaction.set_rollback(True)
            return response

    @property
    def principal(self) -> Principal:
        return self.request.auth


class TenantAPIView(TenantScopedMixin, APIView):
    pass


class TenantViewSet(TenantScopedMixin, viewsets.GenericViewSet):
    model = None
    lookup_value_converter = "uuid"

    def get_queryset(self):
        if self.model is None:
            raise ImproperlyConfigured(f"{type(self).__name__} must set `model`.")
        # The manager filters to the tenant in context; the extra filter on the principal's
        # tenant is a second, explicit lock on the same door.
        queryset = self.model.objects.filter(tenant_id=self.principal.tenant.id)
        return self.scope_queryset(queryset)

    def scope_queryset(self, queryset):
        return queryset
