"""WebSocket routes of the notifications app, versioned like the REST API."""

from django.urls import path

from notifications.consumers import NotificationConsumer

websocket_urlpatterns = [
    path("ws/v1/notifications/", NotificationConsumer.as_asgi()),
]
