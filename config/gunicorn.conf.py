"""gunicorn settings: `gunicorn -c config/gunicorn.conf.py config.wsgi:application`.

Logging: the master process never loads Django, so its lines ("Booting worker", "Worker timeout")
are configured here, from the same builder as settings.LOGGING; the workers load Django, which
applies settings.LOGGING again. Either way they are JSON lines like the application's.
"""

import os

from config.settings.logging import build_logging
from core.metrics import child_exit, on_starting  # noqa: F401 - prometheus multiprocess hooks

# RequestIdMiddleware writes one access line per request, with the request id and without the
# query string; gunicorn's own access line would repeat it, query string included.
accesslog = None
logconfig_dict = build_logging(
    level=os.environ.get("LOG_LEVEL", "INFO"), fmt=os.environ.get("LOG_FORMAT", "json")
)
