"""Tests: the real services named by the environment, with cheap password hashing."""

from config.settings.base import *  # noqa: F403

# Argon2id stays the hasher under test, with a small cost so that a suite of logins stays fast.
PASSWORD_HASHERS = ["core.testing.FastArgon2PasswordHasher", *PASSWORD_HASHERS]  # noqa: F405
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Application flows run their tasks inline, as in the embedded default, so a test sees their
# effects; tests about the worker itself send through the real broker (tests/fixtures).
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=True)  # noqa: F405

# pytest-xdist runs workers side by side against one Redis: give each its own key space.
_worker = env.str("PYTEST_XDIST_WORKER", default="main")  # noqa: F405
if REDIS_URL:  # noqa: F405
    for _cache in CACHES.values():  # noqa: F405
        _cache["KEY_PREFIX"] = f"test-{_worker}"
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"test-{_worker}"  # noqa: F405
