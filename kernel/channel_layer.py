"""The Redis channel layer, for a Redis that fails over (Sentinel, docs/scale-out.md).

channels-redis waits for a server process's messages with a blocking pop on one connection. When
the primary goes away, that pop raises, the error reaches the consumer of every socket of the
process and each socket is closed: a failover of a few seconds would drop every client. Here the
wait is taken up again instead, at growing intervals, until the new primary answers (the
connection pool asks the sentinels where it is on each new connection): the sockets stay open
and receive what is sent once the layer is back. Messages are kept in Redis, so that nothing
waiting for the process is lost by the retry; what could not be sent meanwhile (a push during the
failover) is logged by its sender and stays stored for `resume`.

Only the wait is retried: a send fails at once, as its callers expect (notifications/realtime.py).
"""

import asyncio

import structlog
from channels_redis.core import RedisChannelLayer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = structlog.get_logger(__name__)

# Redis cannot be reached (or is a replica now, which redis-py's Sentinel connections turn into a
# ConnectionError): the errors a failover raises. An error Redis answers with is not one of them.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)
FIRST_RETRY_SECONDS = 0.1
MAX_RETRY_SECONDS = 2.0


class FailoverRedisChannelLayer(RedisChannelLayer):
    async def receive_single(self, channel: str) -> tuple:
        delay = FIRST_RETRY_SECONDS
        failed_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            try:
                received = await super().receive_single(channel)
            except UNREACHABLE as exc:
                if failed_since is None:
                    failed_since = loop.time()
                    log.warning("channel_layer_receive_unavailable", error=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            if failed_since is not None:
                log.info(
                    "channel_layer_receive_recovered",
                    down_seconds=round(loop.time() - failed_since, 1),
                )
            return received
