from django.apps import AppConfig
from django.db.backends.signals import connection_created

from core.logging import install_slow_query_log


class CoreConfig(AppConfig):
    """Cross-cutting HTTP plumbing: problem details, tracing, health and metrics."""

    name = "core"

    def ready(self) -> None:
        # Every connection of every alias, in web processes and in Celery workers alike.
        connection_created.connect(install_slow_query_log, dispatch_uid="core.slow_query_log")
