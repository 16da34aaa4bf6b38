"""WebSocket routes of the notifications app (the consumer arrives with the notifications work)."""

websocket_urlpatterns: list = []
