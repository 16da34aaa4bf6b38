from rest_framework.routers import SimpleRouter

from oauth.api import views

# Path converters rather than regexes, so that ids are matched (and documented) as UUIDs.
router = SimpleRouter(use_regex_path=False)
router.register("oauth-apps", views.AppViewSet, basename="oauth-app")
router.register("oauth-grants", views.GrantViewSet, basename="oauth-grant")

urlpatterns = [*router.urls]
