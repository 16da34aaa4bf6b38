"""WSGI entry point: the REST API and the admin in production (gunicorn workers)."""

import os

from django.conf import settings
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

application = get_wsgi_application()
if settings.SERVE_STATIC:
    application = StaticFilesHandler(application)
