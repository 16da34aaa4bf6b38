"""Channel-layer groups and the events that close sockets.

Group names come from a verified principal only, never from client input, so a message for one
tenant cannot be routed to a socket of another. Events that end sockets (a tenant suspended, a
member removed, a session logged out) are sent after the transaction that caused them commits.
"""

import uuid

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

# Close codes of the WebSocket protocol (see docs/api-conventions.md).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


def tenant_group(tenant_id: uuid.UUID | str) -> str:
    return f"tenant.{uuid.UUID(str(tenant_id)).hex}"


def user_group(tenant_id: uuid.UUID | str, user_id: uuid.UUID | str) -> str:
    return f"user.{uuid.UUID(str(tenant_id)).hex}.{uuid.UUID(str(user_id)).hex}"


def session_group(session_id: str) -> str:
    return f"session.{session_id}"


def _send_on_commit(group: str, message: dict) -> None:
    layer = get_channel_layer()
    if layer is not None:
        transaction.on_commit(lambda: async_to_sync(layer.group_send)(group, message))


def disconnect_tenant(tenant_id, *, code: int = CLOSE_FORBIDDEN, reason: str) -> None:
    """Close every open socket of the tenant (suspended, deleted)."""
    _send_on_commit(
        tenant_group(tenant_id), {"type": "socket.close", "code": code, "reason": reason}
    )


def disconnect_user(tenant_id, user_id, *, reason: str) -> None:
    """Close a member's sockets in one tenant (membership removed)."""
    _send_on_commit(
        user_group(tenant_id, user_id),
        {"type": "socket.close", "code": CLOSE_UNAUTHENTICATED, "reason": reason},
    )


def disconnect_session(session_id: str) -> None:
    """Close the sockets opened with the tokens of one sign-in (logout)."""
    _send_on_commit(
        session_group(session_id),
        {"type": "socket.close", "code": CLOSE_UNAUTHENTICATED, "reason": "logged-out"},
    )
