from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from core import health

api_v1 = [
    # Django tries the routes in order, and each route tried costs a match: the catalog, which
    # takes most of the requests, comes first.
    path("", include("catalog.api.urls")),
    path("", include("accounts.api.urls")),
    path("", include("tenants.api.urls")),
    path("", include("notifications.api.notification_urls")),
    path("", include("notifications.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path(
        "redoc/",
        SpectacularRedocView.as_view(url_name="schema", template_name="api_docs/redoc.html"),
        name="redoc",
    ),
]

urlpatterns = [
    # URL-path versioning: DRF reads `version`; ALLOWED_VERSIONS limits it to v1, and anything
    # else matches no route, so it is a 404 problem. First: it takes most of the requests.
    re_path(r"^api/(?P<version>v1)/", include(api_v1)),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("admin/", admin.site.urls),
]

handler404 = "core.problems.handler404"
handler500 = "core.problems.handler500"
