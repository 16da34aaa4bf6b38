"""Tests: the real services named by the environment, with cheap password hashing."""

import os
import uuid

from config.settings.base import *  # noqa: F403

# Argon2id stays the hasher under test, with a small cost so that a suite of logins stays fast.
PASSWORD_HASHERS = ["kernel.testing.FastArgon2PasswordHasher", *PASSWORD_HASHERS]  # noqa: F405
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

# Rate-limit counts live in Redis past the end of a test, and some are keyed by what tests share
# (the test client's address, fixture emails): a prefix per run and worker keeps one run's counts
# out of the next. Live servers a test starts inherit the environment, and so the same prefix.
_run = os.environ.setdefault(
    "TEST_RUN_ID",
    env.str("PYTEST_XDIST_TESTRUNUID", default="") or uuid.uuid4().hex,  # noqa: F405
)
RATELIMIT_KEY_PREFIX = f"test-{_worker}-{_run[:12]}:rl"
# Every test calls from the test client's one address: per-address limits would see the suite as
# one client flooding the API. The tests of those limits set their own (test_login_limits.py);
# tenant, credential and per-account limits stay as in production.
RATELIMIT_ANONYMOUS_RATE = (1_000_000, 60)
RATELIMIT_AUTH_RATE = (1_000_000, 60)
RATELIMIT_SIGNUP_RATE = (1_000_000, 60)
LOGIN_ADDRESS_FAILURE_LIMIT = 1_000_000
# Each probe sees the dependencies as they are now (tests stop them between two probes); the
# memory of the last results has a test of its own.
READINESS_CACHE_SECONDS = 0
