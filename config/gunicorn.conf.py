"""gunicorn settings: `gunicorn -c config/gunicorn.conf.py config.wsgi:application`.

Logging: the master process never loads Django, so its lines ("Booting worker", "Worker timeout")
are configured here, from the same builder as settings.LOGGING; the workers load Django, which
applies settings.LOGGING again. Either way they are JSON lines like the application's.
"""

import gc
import os

from config.settings.logging import build_logging
from kernel.metrics import child_exit, on_starting  # noqa: F401 - prometheus multiprocess hooks

# RequestIdMiddleware writes one access line per request, with the request id and without the
# query string; gunicorn's own access line would repeat it, query string included.
accesslog = None
logconfig_dict = build_logging(
    level=os.environ.get("LOG_LEVEL", "INFO"), fmt=os.environ.get("LOG_FORMAT", "json")
)

# Python's cycle collector runs its youngest generation every 700 allocations net of frees; a
# request allocates thousands of short-lived objects, so it ran several times a request, each time
# walking what was alive. Every GC_GEN0_THRESHOLD allocations it runs a fraction as often, and
# garbage in cycles (rare: most objects are freed by reference counting) waits a little longer.
GC_GEN0_THRESHOLD = int(os.environ.get("GC_GEN0_THRESHOLD", "10000"))


def post_worker_init(worker: object) -> None:
    """Once the worker has loaded the application: what it loaded lives as long as the worker,
    so it is moved out of the collector's sight (`gc.freeze`), and later full collections walk
    only what requests left behind; then the youngest generation's threshold is raised."""
    gc.collect()
    gc.freeze()
    if GC_GEN0_THRESHOLD > 0:
        gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
