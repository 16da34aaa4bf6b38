"""Channel-layer groups and the events that close sockets.

Group names come from a verified principal only, never from client input, so a message for one
tenant cannot be routed to a socket of another. Events that may end sockets (access changed in a
tenant, a session logged out) are sent after the transaction that caused them commits.
"""

import uuid

import structlog
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from opentelemetry.trace import SpanKind
from redis.exceptions import RedisError

from kernel import tracing

log = structlog.get_logger(__name__)

CHANNEL_LAYER_ERRORS = (RedisError, OSError)

# Close codes of the WebSocket protocol (see docs/api-conventions.md).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


def tenant_group(tenant_id: uuid.UUID | str) -> str:
    return f"tenant.{uuid.UUID(str(tenant_id)).hex}"


def user_group(tenant_id: uuid.UUID | str, user_id: uuid.UUID | str) -> str:
    return f"user.{uuid.UUID(str(tenant_id)).hex}.{uuid.UUID(str(user_id)).hex}"


def session_group(session_id: str) -> str:
    return f"session.{session_id}"


def recheck_tenant_sockets(tenant_id) -> None:
    """Ask every open socket of the tenant to verify its credential again, now.

    Called when who may do what in the tenant changed (registered with
    kernel.principals.on_access_changed, called after commit): a socket whose token no longer
    passes (tenant suspended or deleted, member removed, password changed, permission gone) is
    closed with 4401 or 4403; the others carry on.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(tenant_group(tenant_id), {"type": "access.changed"})
    except CHANNEL_LAYER_ERRORS:
        # The sockets still re-check when their token expires (15 minutes at most).
        log.warning("socket_recheck_unavailable", tenant_id=str(tenant_id))


def disconnect_session(session_id: str) -> None:
    """Close the sockets opened with the tokens of one sign-in (logout), after commit; registered
    with kernel.principals.on_session_revoked."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "socket.close", "code": CLOSE_UNAUTHENTICATED, "reason": "logged-out"}

    def send() -> None:
        try:
            async_to_sync(layer.group_send)(session_group(session_id), message)
        except CHANNEL_LAYER_ERRORS:
            log.warning("socket_disconnect_unavailable")

    transaction.on_commit(send)


def push_notifications(tenant_id, pushes: list[tuple]) -> None:
    """Send stored notifications to their recipients' sockets, on any server process.

    A push that does not arrive (Redis down, channel over capacity) loses nothing: the
    notification is stored, and `resume` or the REST list returns it.
    """
    layer = get_channel_layer()
    if layer is None or not pushes:
        return

    async def send_all() -> None:
        # The trace of the change travels with the push: the socket's server continues it
        # (consumers.NotificationConsumer.notification_push).
        carrier = tracing.trace_carrier()
        # One event loop and one Redis connection for the whole fan-out: a loop per push
        # would open a connection per recipient.
        for user_id, seq, payload in pushes:
            await layer.group_send(
                user_group(tenant_id, user_id),
                {"type": "notification.push", "seq": seq, "notification": payload, **carrier},
            )

    try:
        with tracing.span(
            "notifications push",
            kind=SpanKind.PRODUCER,
            **{"messaging.system": "channels", "messaging.batch.message_count": len(pushes)},
        ):
            async_to_sync(send_all)()
    except CHANNEL_LAYER_ERRORS:
        log.warning("notification_push_unavailable", tenant_id=str(tenant_id))
