"""WebSocket routes, versioned like the REST API."""

from notifications.routing import websocket_urlpatterns as notification_routes

websocket_urlpatterns = [*notification_routes]
