from django.urls import path
from rest_framework.routers import SimpleRouter

from notifications.api import notifications

# Path converters rather than regexes, so that ids are matched (and documented) as UUIDs.
router = SimpleRouter(use_regex_path=False)
router.register("notifications", notifications.NotificationViewSet, basename="notification")

urlpatterns = [
    path(
        "notification-preferences/",
        notifications.NotificationPreferencesView.as_view(),
        name="notification-preferences",
    ),
    *router.urls,
]
