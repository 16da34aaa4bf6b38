"""Tests: the real services named by the environment, with cheap password hashing."""

from config.settings.base import *  # noqa: F403

# Argon2id stays the hasher under test, with a small cost so that a suite of logins stays fast.
PASSWORD_HASHERS = ["core.testing.FastArgon2PasswordHasher", *PASSWORD_HASHERS]  # noqa: F405
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

# pytest-xdist runs workers side by side against one Redis: give each its own key space.
_worker = env.str("PYTEST_XDIST_WORKER", default="main")  # noqa: F405
if REDIS_URL:  # noqa: F405
    CACHES["default"]["KEY_PREFIX"] = f"test-{_worker}"  # noqa: F405
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"test-{_worker}"  # noqa: F405
