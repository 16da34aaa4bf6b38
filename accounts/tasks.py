"""Background jobs of the accounts app: thin, they only deliver."""

from celery import shared_task
from django.core.mail import send_mail


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def send_email_task(*, to: str, subject: str, body: str) -> None:
    send_mail(subject, body, None, [to])


@shared_task
def api_key_last_used_flush_task() -> int:
    """Take the API key uses marked in the cache to the database (beat, every minute)."""
    # Imported here: services import this module for send_email_task.
    from accounts.services import api_key_last_used_flush

    return api_key_last_used_flush()
