from rest_framework.routers import SimpleRouter

from webhooks.api import views

# Path converters rather than regexes, so that ids are matched (and documented) as UUIDs.
router = SimpleRouter(use_regex_path=False)
router.register("webhooks", views.WebhookEndpointViewSet, basename="webhook")

urlpatterns = [*router.urls]
