"""The default cache's Redis, as the code that needs more of it than Django's cache API sees it:
the errors that mean it cannot be reached, a back-off after a failure, its raw client, scripts,
and the state a process keeps per cache.

The rate limits run scripts on it (`kernel.ratelimit`), cached reads keep tracked keys on a
connection of their own (`kernel.tracked`), the catalog's read cache falls back to the database
while it is down (`catalog.cache`). Each decides for itself what an outage means to its callers
(a fallback or a refusal, what it logs and counts); what they share is written once, here.

Errors
    `REDIS_ERRORS`: what talking to Redis raises when it is unreachable, times out or answers
    with an error: redis-py's errors, socket errors that escape its wrapping (OSError), and
    django-redis' ConnectionInterrupted, which its client's methods raise (its cache API raises
    the error underneath instead).

Back-off
    After a failure a caller leaves Redis alone for a while (`Backoff`), so that a Redis that
    hangs costs one socket timeout rather than one per request.

Scripts
    A `Script` is sent by its SHA1, and loaded only when Redis does not know it. A caller that
    needs something else from Redis at the same moment sends it in the same round trip
    (`Script.run_with`: a pipeline, not a transaction), so that the script need not read keys
    that are none of its business.

State per cache
    What a process keeps about Redis (a back-off, a tracking connection, the raw keys and the
    entries cached reads remember) belongs to the cache it was made for, and is keyed by the
    default cache's identity (`cache_identity()`: its location, key prefix and version);
    `PerCache` keeps one object per identity. Tests repoint all of it the way they repoint the
    cache itself, by setting `CACHES` (pytest-django's `settings` fixture, `override_settings`):
    the next call starts afresh on the new cache, and the earlier cache's state is there again
    once the setting is restored.
"""

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from django.conf import settings
from django_redis import get_redis_connection
from django_redis.exceptions import ConnectionInterrupted
from redis import Redis
from redis.exceptions import NoScriptError, RedisError

T = TypeVar("T")

REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, ConnectionInterrupted, OSError)


def default_client() -> Redis:
    """The redis-py client of the default cache, on django-redis' own connection pool.

    Raises NotImplementedError, as django-redis does, when the default cache is not Redis."""
    return get_redis_connection("default")


def cache_identity() -> tuple[str, str, Any]:
    """Which default cache this is, for state kept per cache: where it is (`LOCATION`), and the
    prefix and version its keys are made with."""
    options = settings.CACHES["default"]
    location = str(options.get("LOCATION", ""))
    return location, options.get("KEY_PREFIX", ""), options.get("VERSION", 1)


class PerCache(Generic[T]):
    """One `T` per default cache the process has been pointed at, made by `make` on first use."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._made: dict[tuple, T] = {}
        self._lock = threading.Lock()

    def get(self) -> T:
        identity = cache_identity()
        try:
            return self._made[identity]
        except KeyError:
            pass
        with self._lock:
            if identity not in self._made:
                self._made[identity] = self._make()
            return self._made[identity]


class Backoff:
    """Whether Redis may be asked now: not for a while after a failure.

    It is `down` from a failure until `recovered()`, so that a caller can tell an outage's first
    failure, and its end, from the failures and successes in between (to log once, say)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until = 0.0
        self._since: float | None = None

    def allows(self) -> bool:
        """No failure within the back-off its caller chose."""
        return time.monotonic() >= self._until

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, retry_after: float) -> bool:
        """A failure: Redis is left alone for `retry_after` seconds. True when it begins an
        outage."""
        now = time.monotonic()
        with self._lock:
            self._until = now + retry_after
            first = self._since is None
            if first:
                self._since = now
        return first

    def recovered(self) -> float | None:
        """A success: the seconds the outage it ends lasted; None when there was none (or
        another thread's success ended it)."""
        if self._since is None:  # the usual case, decided without the lock
            return None
        with self._lock:
            since, self._since = self._since, None
        return None if since is None else time.monotonic() - since


class Script:
    """A Lua script, sent by its SHA1 (EVALSHA) and loaded into Redis whenever Redis does not
    know it (a new or restarted Redis, `SCRIPT FLUSH`): one round trip but for those."""

    def __init__(self, source: str) -> None:
        self.source = source
        # What Redis names a script by; not a digest anything relies on to be secure.
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324

    def run(self, client: Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The script's reply."""
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return self._load_and_run(client, keys, args)

    def run_with(
        self, client: Redis, keys: Sequence[str], args: Sequence[Any], command: Sequence[Any]
    ) -> tuple[Any, Any]:
        """The script's reply, and the reply of one more `command`, sent in the same round trip.

        A pipeline, not a transaction: Redis runs the command right after the script, whatever
        the script did, and neither reply depends on the other. A script Redis does not know is
        loaded and run again on its own (the command's reply stands)."""
        with client.pipeline(transaction=False) as pipeline:
            pipeline.evalsha(self.sha, len(keys), *keys, *args)
            pipeline.execute_command(*command)
            reply, other = pipeline.execute(raise_on_error=False)
        if isinstance(reply, NoScriptError):
            reply = self._load_and_run(client, keys, args)
        for answer in (reply, other):
            if isinstance(answer, Exception):
                raise answer
        return reply, other

    def _load_and_run(self, client: Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        client.script_load(self.source)
        return client.evalsha(self.sha, len(keys), *keys, *args)
