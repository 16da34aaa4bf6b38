"""Background jobs of the accounts app: thin, they call into the app's modules."""

from celery import shared_task
from django.core.mail import send_mail

from accounts import apikeys, erasure
from accounts.erasure import user_erase_task

# Defined beside the work it runs; named here so that the worker's autodiscovery registers it.
__all__ = [
    "api_key_last_used_flush_task",
    "send_email_task",
    "user_erase_task",
    "user_erasure_sweep_task",
]


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def send_email_task(*, to: str, subject: str, body: str) -> None:
    send_mail(subject, body, None, [to])


@shared_task
def api_key_last_used_flush_task() -> int:
    """Take the API key uses marked in the cache to the database (beat, every minute)."""
    return apikeys.api_key_last_used_flush()


@shared_task(name="accounts.tasks.user_erasure_sweep_task")
def user_erasure_sweep_task() -> int:
    """Queue again the erasures asked for and not done (beat): none is ever lost."""
    pending = erasure.erasures_pending()
    for user_id in pending:
        user_erase_task.delay(str(user_id))
    return len(pending)
