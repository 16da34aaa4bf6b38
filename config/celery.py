"""The Celery application. Tasks are thin: they re-enter the caller's context and call services."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = Celery("tenantapi")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
