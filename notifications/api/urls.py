from rest_framework.routers import SimpleRouter

from notifications.api import webhooks

# Path converters rather than regexes, so that ids are matched (and documented) as UUIDs.
router = SimpleRouter(use_regex_path=False)
router.register("webhooks", webhooks.WebhookEndpointViewSet, basename="webhook")

urlpatterns = [
    *router.urls,
]
