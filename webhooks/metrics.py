"""Webhook deliveries as numbers: every attempt's outcome, so that dead letters (deliveries given
up on after their last attempt) rising across the platform is an alert, not a support ticket.

Counted where the attempt runs (a Celery worker, served on WORKER_METRICS_PORT; inline, the
process that ran it). Labelled by outcome only: never by tenant or endpoint, which are unbounded.
"""

from django.conf import settings
from prometheus_client import Counter

DELIVERY_ATTEMPTS = Counter(
    "webhook_delivery_attempts_total",
    "Webhook delivery attempts by outcome: succeeded, failed (to be retried) or dead (given up).",
    ["outcome"],
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)
