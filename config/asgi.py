"""ASGI entry point: WebSockets in production (HTTP there is the probes only); HTTP and
WebSockets together in the embedded run, or wherever ASGI_SERVE_HTTP asks for it
(kernel/asgi.py)."""

import os

from channels.routing import ProtocolTypeRouter, URLRouter
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

from kernel import telemetry

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

# Django must be set up before anything imports models.
http_application = get_asgi_application()
# Once Django (and so logging) is set up, before the first request opens a connection.
telemetry.setup("asgi")

from config.routing import websocket_urlpatterns  # noqa: E402
from kernel.asgi import BodyLimit, HealthOnly  # noqa: E402

if settings.SERVE_STATIC:
    http_application = ASGIStaticFilesHandler(http_application)
if not settings.ASGI_SERVE_HTTP:
    http_application = HealthOnly(http_application)
# Outermost: a body over its limit is refused before Django's handler reads any of it.
http_application = BodyLimit(http_application)

application = ProtocolTypeRouter(
    {
        "http": http_application,
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
# Outermost: the server span covers every answer and every socket (kernel/telemetry.py).
application = telemetry.asgi_application(application)
