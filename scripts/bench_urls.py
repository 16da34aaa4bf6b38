"""The project's URLs plus `/bench/bare/`: the ceiling of what the server and middleware allow.

A plain Django view returning a fixed JSON body, outside `/api/`: every middleware of the stack
runs for it (request id, tenant scope, CORS, problem details, security, sessions, CSRF, metrics),
but no authentication, no rate limit, no DRF, no cache and no database. Served only by the
benchmark (scripts/bench_settings.py).

`/bench/round-trip/` is the same view after one Redis round trip (a PING, through the cache's
own client and connection pool): the most a request that asks Redis once can reach. A cached
hit of a person mostly asks Redis nothing (docs/catalog.md, "A hit, answered before DRF"); this
row shows what one round trip would cost it.
"""

from django.http import JsonResponse
from django.urls import path
from django_redis import get_redis_connection

from config.urls import handler404, handler500  # noqa: F401  (read from the root URLconf)
from config.urls import urlpatterns as project_urlpatterns

BARE_BODY = {"ok": True, "detail": "a fixed body, as small as a probe's"}


def bare(request):
    return JsonResponse(BARE_BODY)


def bare_after_round_trip(request):
    get_redis_connection("default").ping()
    return JsonResponse(BARE_BODY)


urlpatterns = [
    path("bench/bare/", bare),
    path("bench/round-trip/", bare_after_round_trip),
    *project_urlpatterns,
]
