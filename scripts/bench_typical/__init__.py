"""The catalog's product endpoints as a typical Django project writes them: the benchmark's
alternative (scripts/bench_catalog.py, the `typical-*` scenarios).

Served by a gunicorn of its own, on the same tables as the real API, and doing less than it: a
DRF ModelViewSet over the product table, stock simplejwt authentication (one user query a
request), a django-filter FilterSet, DRF's cursor pagination, `cache_page` through django-redis
on the list and the detail, and startproject's default middleware. No tenant scoping, row-level
security, audit, events, rate limits, conditional requests, idempotency or metrics. Never
deployed: the benchmark is its only user.
"""
