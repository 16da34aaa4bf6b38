"""The project's URLs plus `/bench/bare/`: the ceiling of what the server and middleware allow.

A plain Django view returning a fixed JSON body, outside `/api/`: every middleware of the stack
runs for it (request id, tenant scope, CORS, problem details, security, sessions, CSRF, metrics),
but no authentication, no rate limit, no DRF, no cache and no database. Served only by the
benchmark (scripts/bench_settings.py).
"""

from django.http import JsonResponse
from django.urls import path

from config.urls import handler404, handler500  # noqa: F401  (read from the root URLconf)
from config.urls import urlpatterns as project_urlpatterns

BARE_BODY = {"ok": True, "detail": "a fixed body, as small as a probe's"}


def bare(request):
    return JsonResponse(BARE_BODY)


urlpatterns = [path("bench/bare/", bare), *project_urlpatterns]
