from django.urls import path
from rest_framework.routers import SimpleRouter

from notifications.api import notifications as views

router = SimpleRouter(use_regex_path=False)
router.register("notifications", views.NotificationViewSet, basename="notification")

urlpatterns = [
    path(
        "notification-preferences/",
        views.NotificationPreferencesView.as_view(),
        name="notification-preferences",
    ),
    *router.urls,
]
