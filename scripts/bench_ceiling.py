"""What Django itself can do here: the benchmark's ceiling (scripts/bench_catalog.py, `ceiling`).

Settings and URLconf in one module, with as little as Django runs with: no middleware, no
installed apps, no database, no cache. One view answers at the product list's path with exactly
the bytes of the cached list's body and its content type, which the benchmark fetched from our
server after seeding and wrote to the file BENCH_CEILING_BODY names. gunicorn serves it through
`django.core.wsgi:get_wsgi_application()`, with the same config/gunicorn.conf.py and worker
count as ours. Never deployed: the benchmark is its only user.
"""

import os
from pathlib import Path

from django.http import HttpResponse
from django.urls import path

SECRET_KEY = os.environ["SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = os.environ["ALLOWED_HOSTS"].split(",")
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = __name__
DATABASES: dict = {}
USE_TZ = True
# config/gunicorn.conf.py, shared with our servers, imports kernel.metrics, which reads this.
PROMETHEUS_METRIC_NAMESPACE = os.environ.get("PROMETHEUS_METRIC_NAMESPACE", "tenantapi")

BODY = Path(os.environ["BENCH_CEILING_BODY"]).read_bytes()
CONTENT_TYPE = os.environ["BENCH_CEILING_CONTENT_TYPE"]


def cached_list_bytes(request):
    return HttpResponse(BODY, content_type=CONTENT_TYPE)


def healthz(request):
    return HttpResponse(b"ok", content_type="text/plain")


urlpatterns = [
    path("api/v1/products/", cached_list_bytes),
    path("healthz", healthz),
]
