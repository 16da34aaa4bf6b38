"""Metrics of real-time delivery: pushes the channel layer dropped, sockets closed as too slow.

channels-redis drops a group message for a channel that is over capacity and reports it only
in a log record; counting those records is how the drops reach /metrics. A dropped push is never
a lost notification: it is stored, and `resume` or the REST list returns it.
"""

import logging

from django.conf import settings
from prometheus_client import Counter

CHANNEL_LAYER_DROPS = Counter(
    "channel_layer_dropped_total",
    "Group messages the channel layer dropped because a socket's channel was full.",
    ["group_kind"],
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)
SLOW_SOCKETS_CLOSED = Counter(
    "websocket_slow_closed_total",
    "Sockets closed because their client did not read what was sent to it in time.",
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)

# The exact record channels_redis.core logs from group_send (args: dropped, total, group).
_OVER_CAPACITY = "%s of %s channels over capacity in group %s"


class ChannelLayerDropCounter(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == _OVER_CAPACITY and len(record.args or ()) == 3:
            dropped, _, group = record.args
            # The kind of group (tenant, user, session), never its name: no tenant in labels.
            CHANNEL_LAYER_DROPS.labels(str(group).split(".", 1)[0]).inc(int(dropped))


def count_channel_layer_drops() -> None:
    logger = logging.getLogger("channels_redis.core")
    if not any(isinstance(handler, ChannelLayerDropCounter) for handler in logger.handlers):
        logger.addHandler(ChannelLayerDropCounter(level=logging.INFO))
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
