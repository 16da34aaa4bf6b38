"""The kernel's own routes: the jobs every feature starts (kernel/api/jobs.py), and the exports of
a tenant's data and of a person's own (kernel/api/exports.py)."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from kernel.api import exports, jobs

router = SimpleRouter(use_regex_path=False)
router.register("jobs", jobs.JobViewSet, basename="job")

urlpatterns = [
    *router.urls,
    path("tenant/export/", exports.TenantExportView.as_view(), name="tenant-export"),
    path("auth/me/export/", exports.PersonalExportView.as_view(), name="auth-me-export"),
    path("exports/<str:token>/", exports.ExportDownloadView.as_view(), name="export-download"),
]
