"""Views that use the tenant views' escape hatch, for tests/kernel/test_view_scoping.py.

Used as a URLconf (`@pytest.mark.urls("tests.kernel.scoping_views")`): the real URLs plus these
views under /api/v1/test/.
"""

from django.urls import include, path
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from config.urls import handler404, handler500
from config.urls import urlpatterns as config_urlpatterns
from kernel.api.base import TenantViewSet
from kernel.permissions import Perm
from kernel.tenancy.models import Role


class RoleNameSerializer(serializers.ModelSerializer):
    class Meta:
        model = Role
        fields = ["id", "name"]


class BuiltinRolesViewSet(TenantViewSet):
    """The built-in roles only, through the hatch: no `model`, so the base's own queryset
    could not even be built."""

    required_permissions = {"list": Perm.MEMBERS_READ, "retrieve": Perm.MEMBERS_READ}

    def dangerously_get_queryset(self):
        # Deliberately without the base's tenant filter: what remains to keep tenants apart is
        # the scoped manager and row-level security, which the tests check.
        return Role.objects.filter(is_builtin=True).order_by("name")

    def list(self, request, *args, **kwargs):
        return Response(RoleNameSerializer(self.get_queryset(), many=True).data)

    def retrieve(self, request, *args, **kwargs):
        return Response(RoleNameSerializer(self.get_object()).data)


class OwnerRoleViewSet(TenantViewSet):
    """Whatever id is asked for, the tenant's owner role: `dangerously_get_object`."""

    model = Role
    required_permissions = {"retrieve": Perm.MEMBERS_READ}

    def dangerously_get_object(self):
        return Role.objects.get(name="owner")

    def retrieve(self, request, *args, **kwargs):
        return Response(RoleNameSerializer(self.get_object()).data)


router = SimpleRouter(use_regex_path=False)
router.register("builtin-roles", BuiltinRolesViewSet, basename="test-builtin-role")
router.register("owner-role", OwnerRoleViewSet, basename="test-owner-role")

urlpatterns = [
    *config_urlpatterns,
    path("api/<str:version>/test/", include(router.urls)),
]

__all__ = ["handler404", "handler500", "urlpatterns"]
