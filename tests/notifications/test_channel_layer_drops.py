"""Pushes channels-redis drops for a full channel are counted in /metrics, not lost silently."""

import uuid

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from prometheus_client import REGISTRY


def dropped(kind: str) -> float:
    return (
        REGISTRY.get_sample_value("tenantapi_channel_layer_dropped_total", {"group_kind": kind})
        or 0.0
    )


def test_a_full_channels_drops_are_counted(settings):
    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    settings.CHANNEL_LAYERS = {
        "default": {**settings.CHANNEL_LAYERS["default"], "CONFIG": {**config, "capacity": 1}}
    }
    layer = get_channel_layer()
    assert layer.capacity == 1
    group = f"user.{uuid.uuid4().hex}.{uuid.uuid4().hex}"
    channel = async_to_sync(layer.new_channel)()  # a socket that never reads
    async_to_sync(layer.group_add)(group, channel)
    before = dropped("user")

    for n in range(3):
        async_to_sync(layer.group_send)(group, {"type": "notification.push", "n": n})

    assert dropped("user") - before == 2  # the channel held one; the other two were dropped
    async_to_sync(layer.group_discard)(group, channel)
