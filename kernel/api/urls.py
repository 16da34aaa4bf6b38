"""The kernel's own routes: the jobs every feature starts (kernel/api/jobs.py), and the exports of
a tenant's data and a person's own (kernel/api/exports.py)."""

from rest_framework.routers import SimpleRouter

from kernel.api import jobs

router = SimpleRouter(use_regex_path=False)
router.register("jobs", jobs.JobViewSet, basename="job")

urlpatterns = [*router.urls]
