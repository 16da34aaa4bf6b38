from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from accounts import pages
from accounts.api.urls import urlpatterns as accounts_urls
from catalog.api.urls import urlpatterns as catalog_urls
from graphql_api.urls import urlpatterns as graphql_urls
from kernel import health
from kernel.api.urls import urlpatterns as kernel_urls
from notifications.api.urls import urlpatterns as notifications_urls
from oauth import urls as oauth_urls
from oauth.api.urls import urlpatterns as oauth_api_urls
from webhooks.api.urls import urlpatterns as webhooks_urls

api_v1 = [
    # Django tries the routes in order, and each route tried costs a match: the catalog, which
    # takes most of the requests, comes first. The apps' routes are spliced in rather than
    # included: an include is one more level of resolving on every request.
    *catalog_urls,
    *accounts_urls,
    *notifications_urls,
    *oauth_api_urls,
    *webhooks_urls,
    *kernel_urls,
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
    # The GraphQL surface over the same kernel (docs/graphql.md).
    *graphql_urls,
    path("", health.index, name="index"),
    # The link of an invitation email (INVITATION_ACCEPT_URL).
    path("accept-invitation", pages.accept_invitation, name="accept-invitation"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    # The OAuth 2.0 and OpenID Connect provider (docs/oauth.md).
    path("", include((oauth_urls.protocol, "oauth2_provider"))),
    path("oauth/", include(oauth_urls.pages)),
]

handler404 = "kernel.problems.handler404"
handler500 = "kernel.problems.handler500"
