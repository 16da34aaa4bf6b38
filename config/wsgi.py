"""WSGI entry point: the REST API and the admin in production (gunicorn workers).

gunicorn imports it in each worker, after the fork (the configuration preloads nothing), so
tracing is set up per process, its exporter's thread included.
"""

import os

from django.conf import settings
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.wsgi import get_wsgi_application

from kernel import telemetry

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

application = get_wsgi_application()
# Once Django (and so logging) is set up, before the first request opens a connection.
telemetry.setup("wsgi")
if settings.SERVE_STATIC:
    application = StaticFilesHandler(application)
# Outermost: the server span covers every answer (kernel/telemetry.py).
application = telemetry.wsgi_application(application)
