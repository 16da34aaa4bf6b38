from django.urls import path
from rest_framework.routers import SimpleRouter

from tenants.api import views

# Path converters rather than regexes, so that ids are matched (and documented) as UUIDs.
router = SimpleRouter(use_regex_path=False)
router.register("roles", views.RoleViewSet, basename="role")
router.register("members", views.MemberViewSet, basename="member")
router.register("invitations", views.InvitationViewSet, basename="invitation")
router.register("audit-events", views.AuditEventViewSet, basename="audit-event")

urlpatterns = [
    path("permissions/", views.PermissionListView.as_view(), name="permission-list"),
    path("tenant/", views.TenantView.as_view(), name="tenant"),
    path("invitations/accept/", views.InvitationAcceptView.as_view(), name="invitation-accept"),
    *router.urls,
]
