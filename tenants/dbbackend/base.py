"""PostgreSQL backend that runs every connection under row-level security (filled in by issue 3).

It builds on django-prometheus's backend so that query counts and latencies reach /metrics.
"""

from django_prometheus.db.backends.postgresql.base import DatabaseWrapper as PrometheusPostgres


class DatabaseWrapper(PrometheusPostgres):
    pass
