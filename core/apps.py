from django.apps import AppConfig


class CoreConfig(AppConfig):
    """Cross-cutting HTTP plumbing: problem details, tracing, health and metrics."""

    name = "core"
