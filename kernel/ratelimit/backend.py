"""The rate limits' Redis, and what happens when it cannot be reached: the request is served
unchecked (or a write refused, as the caller decides), counted, and the outage logged at most
once a minute and when it ends; Redis is then left alone for RATELIMIT_BACKEND_RETRY_SECONDS."""

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from django.conf import settings
from prometheus_client import Counter

from kernel.redis import REDIS_ERRORS, Backoff, PerCache, Script, default_client

log = structlog.get_logger(__name__)

# How often an ongoing Redis outage is written to the log (it is counted on every request).
FAILURE_LOG_SECONDS = 60.0

UNCHECKED = Counter(
    "ratelimit_unchecked",
    "API requests that could not be rate-limited because Redis was unavailable, by what "
    "happened to them (allowed: served without a limit; refused: answered 503).",
    ["outcome"],
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)


class Backend:
    """The default cache's Redis as the limits use it, and what happens when it cannot be
    reached."""

    def __init__(self) -> None:
        self._backoff = Backoff()
        self._lock = threading.Lock()
        self._last_logged = 0.0
        self._unchecked_since_log = 0

    def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> list | None:
        """The script's reply, or None when Redis is unavailable (counted, logged, remembered)."""
        return self._ask(script.run, keys, args)

    def run_with(
        self, script: Script, keys: Sequence[str], args: Sequence[Any], command: Sequence[Any]
    ) -> tuple[list, Any] | None:
        """The script's reply and that of one more command of the caller's, sent in the same
        round trip (`Script.run_with`); None when Redis is unavailable, as for `run`."""
        return self._ask(script.run_with, keys, args, command)

    def delete(self, key: str) -> None:
        self._ask(lambda client: client.delete(key))

    def exists(self, key: str) -> bool:
        """Whether `key` is there; False when Redis is unavailable."""
        return bool(self._ask(lambda client: client.exists(key)))

    def mark(self, key: str, seconds: int) -> None:
        """Set `key` for `seconds`."""
        self._ask(lambda client: client.set(key, 1, ex=seconds))

    def _ask(self, call: Callable[..., Any], *args: Any) -> Any:
        """`call(client, *args)`, or None when Redis is unavailable."""
        if not self._backoff.allows():
            return None
        try:
            reply = call(default_client(), *args)
        except (*REDIS_ERRORS, NotImplementedError) as exc:
            # NotImplementedError: the cache is not Redis (RATELIMIT_ENABLED without REDIS_URL).
            self._failed(exc)
            return None
        self._recovered()
        return reply

    def unchecked(self, outcome: str) -> None:
        """A request went on ("allowed") or was refused ("refused") without a check: counted."""
        with self._lock:
            self._unchecked_since_log += 1
        UNCHECKED.labels(outcome=outcome).inc()

    def _failed(self, exc: BaseException) -> None:
        self._backoff.failed(settings.RATELIMIT_BACKEND_RETRY_SECONDS)
        now = time.monotonic()
        with self._lock:
            if now - self._last_logged < FAILURE_LOG_SECONDS:
                return
            self._last_logged = now
            unchecked, self._unchecked_since_log = self._unchecked_since_log, 0
        log.warning(
            "ratelimit_backend_unavailable",
            error=type(exc).__name__,
            unchecked_requests_since_last_report=unchecked,
            retry_seconds=settings.RATELIMIT_BACKEND_RETRY_SECONDS,
        )

    def _recovered(self) -> None:
        down_seconds = self._backoff.recovered()
        if down_seconds is None:
            return
        with self._lock:
            self._last_logged = 0.0
            unchecked, self._unchecked_since_log = self._unchecked_since_log, 0
        log.info(
            "ratelimit_backend_recovered",
            down_seconds=round(down_seconds, 1),
            unchecked_requests_since_last_report=unchecked,
        )


# Per default cache, so that a process pointed elsewhere (a test, a changed setting) starts afresh.
_backends = PerCache(Backend)


def backend() -> Backend:
    return _backends.get()
