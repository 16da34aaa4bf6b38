"""Background jobs of the accounts app: thin, they call into the app's modules."""

from celery import shared_task
from django.core.mail import send_mail

from accounts import apikeys


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def send_email_task(*, to: str, subject: str, body: str) -> None:
    send_mail(subject, body, None, [to])


@shared_task
def api_key_last_used_flush_task() -> int:
    """Take the API key uses marked in the cache to the database (beat, every minute)."""
    return apikeys.api_key_last_used_flush()
