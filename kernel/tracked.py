"""A few Redis keys' values remembered per process, kept exact by Redis itself.

A cached read checks three small values on every request: the tenant's access epoch, the
session's revocation mark and the catalog's version (kernel/api/cached_reads.py). They change
rarely, and asking Redis for them on every request cost the request a round trip. Instead each
process reads them once over a connection of its own on which Redis tracks what it read
(server-assisted client-side caching: RESP3 and `CLIENT TRACKING ON`, Redis 6 and later), and
Redis pushes an invalidation over that same connection as soon as one of those keys changes,
expires or is evicted, or the database is flushed. Before it answers from memory, the process
reads the pushes already waiting on the socket, without blocking.

Why that is exact: Redis queues the push while it runs the write, and sends it in the same pass
of its event loop as the writer's own reply. So the push is on this process's socket before the
writer can even answer its client, let alone before that client's next request reaches another
process. On one connection, replies and pushes arrive in the order Redis sent them, so a value
read and an invalidation of it cannot pass each other.

What could make a process trust a value it should not is a connection that died without
telling (a host gone, a partition): pushes stop, and nothing says so. So what it remembers is
trusted for CACHED_READ_TRACKING_CONFIRM_SECONDS after the connection last answered; then the
next read asks Redis again, which proves the connection alive and delivers every push sent
before the reply. Any error forgets everything and closes the connection: the caller reads Redis
the usual way until a new connection is up: at the next request after a connection was lost,
RETRY_SECONDS after one could not be made.

redis-py's own client-side cache (`cache_config`) does this for whole commands, but only from
Redis 7.4; this uses the same connection-level pieces of redis-py (RESP3, its invalidation push
handler) on any Redis from 6.
"""

import contextlib
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import structlog
from django.conf import settings
from prometheus_client import Counter
from redis.backoff import NoBackoff
from redis.maint_notifications import MaintNotificationsConfig
from redis.retry import Retry

from kernel.redis import REDIS_ERRORS, Backoff, PerCache, default_client

log = structlog.get_logger(__name__)

# The rare paths only: a hit answered from memory counts nothing, so as to cost nothing.
READS = Counter(
    "tracked_keys_reads",
    "Round trips on the tracking connections: values read, or confirmed, from Redis.",
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)
LOST = Counter(
    "tracked_keys_lost",
    "Times a process forgot what it tracked: its tracking connection failed, or could not be made.",
    ["reason"],
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)

# After a failure, how long the caller reads Redis the usual way before a new connection is tried.
RETRY_SECONDS = 5.0
# Values remembered at most; past it, all are forgotten at once (Redis keeps tracking the keys,
# and an invalidation of a key no longer remembered costs nothing).
MAX_KEYS = 10_000


def connection_name(pid: int) -> str:
    """The tracking connection's name in Redis's `CLIENT LIST`: which process it belongs to."""
    return f"tracked-keys-{pid}"


class TrackedKeys:
    """The values of raw Redis keys, from memory while Redis says nothing changed them."""

    def __init__(self, connection_class: type, connection_kwargs: dict[str, Any]) -> None:
        self._connection_class = connection_class
        self._connection_kwargs = {
            **{
                name: value
                for name, value in connection_kwargs.items()
                if name not in ("client_name", "redis_connect_func")
            },
            "protocol": 3,
            # The maintenance pushes of managed Redis offerings: nothing this connection acts on.
            "maint_notifications_config": MaintNotificationsConfig(enabled=False),
            # An error is for values() to handle (forget everything), not for a retry to hide.
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        self._lock = threading.Lock()
        self._connection: Any = None
        self._pid = 0
        self._values: dict[str, bytes | None] = {}
        self._confirmed_until = 0.0
        self._backoff = Backoff()

    def values(self, keys: Sequence[str]) -> list[bytes | None] | None:
        """The current value of each key (None where it has none), or None when the values cannot
        be vouched for: tracking is down, and the caller must read them from Redis itself."""
        with self._lock:
            if not self._backoff.allows():
                return None
            now = time.monotonic()
            try:
                connection = self._tracking_connection()
            except REDIS_ERRORS as exc:
                LOST.labels(reason="connect").inc()
                self._forget_all(exc, retry_after=RETRY_SECONDS)
                return None
            try:
                self._take_pushes(connection)
                values = self._values
                if now < self._confirmed_until and all(key in values for key in keys):
                    return [values[key] for key in keys]
                # One round trip on the tracking connection: Redis starts tracking the keys, and
                # every push sent before its reply has been read once it is back.
                READS.inc()
                connection.send_command("MGET", *keys)
                read = connection.read_response()
            except REDIS_ERRORS as exc:
                # A connection lost in use (Redis restarted, the client killed): a new one is
                # tried at the next request, which waits only if that fails too.
                LOST.labels(reason="connection").inc()
                self._forget_all(exc, retry_after=0.0)
                return None
            if len(values) + len(keys) > MAX_KEYS:
                values.clear()
            values.update(zip(keys, read, strict=True))
            self._confirmed_until = now + settings.CACHED_READ_TRACKING_CONFIRM_SECONDS
            return list(read)

    def _tracking_connection(self) -> Any:
        if self._connection is not None and self._pid == os.getpid():
            return self._connection
        # None yet, or inherited through a fork: the parent's socket is the parent's.
        self._connection, self._values = None, {}
        connection = self._connection_class(
            **self._connection_kwargs,
            client_name=connection_name(os.getpid()),
            redis_connect_func=self._start_tracking,
        )
        connection.connect()
        self._connection, self._pid = connection, os.getpid()
        return connection

    def _start_tracking(self, connection: Any) -> None:
        """Run by redis-py on every connect of the tracking connection, however it came about:
        the usual handshake, then tracking. Nothing remembered was tracked on a new connection,
        so it is all forgotten."""
        connection.on_connect()
        connection._parser.set_invalidation_push_handler(self._invalidated)
        connection.send_command("CLIENT", "TRACKING", "ON")
        connection.read_response()
        self._values.clear()
        self._confirmed_until = 0.0

    def _take_pushes(self, connection: Any) -> None:
        """Apply the invalidations waiting on the socket, without waiting for any."""
        while connection.can_read(timeout=0):
            connection.read_response(push_request=True)

    def _invalidated(self, push: list) -> None:
        # ["invalidate", [key, ...]], or ["invalidate", None] when the database was flushed.
        keys = push[1]
        if keys is None:
            self._values.clear()
            return
        for key in keys:
            self._values.pop(key.decode() if isinstance(key, bytes) else key, None)

    def _forget_all(self, exc: BaseException, *, retry_after: float) -> None:
        connection, self._connection = self._connection, None
        self._values.clear()
        self._confirmed_until = 0.0
        self._backoff.failed(retry_after)
        if connection is not None and self._pid == os.getpid():
            with contextlib.suppress(*REDIS_ERRORS):
                connection.disconnect()
        log.warning("tracked_keys_unavailable", error=type(exc).__name__, retry_seconds=retry_after)


def tracked_keys() -> TrackedKeys | None:
    """The process's tracked keys on the default cache's Redis; None when the cache is not Redis
    or tracking is turned off."""
    if not settings.CACHED_READ_TRACKING:
        return None
    return _tracked.get()


def _for_default_cache() -> TrackedKeys | None:
    try:
        pool = default_client().connection_pool
    except NotImplementedError:  # the cache is not Redis
        return None
    # The cache's own kind of connection: behind Sentinel, one that asks the sentinels where the
    # primary is each time it connects, so that after a failover the next connection (and its
    # tracking, on an empty memory) is on the new primary.
    return TrackedKeys(pool.connection_class, pool.connection_kwargs)


# Per default cache, so that a process pointed elsewhere (a test, a changed setting) starts afresh.
_tracked: PerCache[TrackedKeys | None] = PerCache(_for_default_cache)
