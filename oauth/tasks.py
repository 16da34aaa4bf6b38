"""Background jobs of third-party apps: thin, they call into the app's modules."""

from celery import shared_task

from oauth import services


@shared_task
def oauth_clear_expired_task() -> int:
    """Delete expired codes and tokens, and the families nothing is left of (beat, hourly)."""
    return services.clear_expired()
