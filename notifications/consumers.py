"""The notifications WebSocket: `/ws/v1/notifications/` (protocol in docs/api-conventions.md).

Thin: it authenticates with the same checks as HTTP (kernel/credentials.py), joins the groups of
the verified principal, and answers the client's messages. The handshake is always accepted first
so that a bad or missing credential can be refused with close code 4401 (a refused handshake
would only show the client an HTTP 403).
"""

import asyncio
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

import structlog
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from opentelemetry.trace import SpanKind
from rest_framework.exceptions import APIException

from kernel import access, credentials, tracing
from kernel.context import tenant_context
from kernel.events import topics as topics_registry
from kernel.events.topics import MAX_TOPICS
from kernel.permissions import Perm
from kernel.principals import Principal
from kernel.problems import Problem, ProblemType
from notifications import selectors, services
from notifications.metrics import SLOW_SOCKETS_CLOSED
from notifications.realtime import (
    CLOSE_FORBIDDEN,
    CLOSE_UNAUTHENTICATED,
    session_group,
    tenant_group,
    user_group,
)

log = structlog.get_logger(__name__)

# What a client that stopped reading sees: the connection ends without a close frame.
CLOSE_ABNORMAL = 1006
# RFC 6455's "message too big".
CLOSE_TOO_BIG = 1009

MAX_TOPIC_LENGTH = 100


class NotificationConsumer(AsyncJsonWebsocketConsumer):
    principal: Principal | None = None

    async def connect(self) -> None:
        self.groups_joined: list[str] = []
        self.timers: list[asyncio.TimerHandle] = []
        # No `subscribe` yet: every topic of the user's. `subscribe` narrows to its patterns,
        # `unsubscribe` takes patterns away again.
        self.included: set[str] | None = None
        self.excluded: set[str] = set()
        # The highest notification sent by a `resume`: a live push of one already replayed is
        # not sent twice.
        self.replayed_up_to = 0
        await self.accept()
        token = self._token_from_handshake()
        if token is not None:
            await self.authenticate(token)
        else:
            self.timers.append(
                asyncio.get_running_loop().call_later(
                    settings.WEBSOCKET_AUTH_TIMEOUT_SECONDS,
                    self._close_soon,
                    CLOSE_UNAUTHENTICATED,
                    "auth-timeout",
                )
            )

    async def disconnect(self, code: int) -> None:
        for timer in self.timers:
            timer.cancel()
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs) -> None:
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self.send_error("invalid-message", "Messages are JSON objects with a 'type'.")
            return
        kind = content["type"]
        if kind == "auth":
            token = content.get("token")
            if not isinstance(token, str) or not token:
                await self.send_error("invalid-message", "'auth' needs a 'token' string.")
                return
            await self.authenticate(token)
            return
        if self.principal is None:
            await self.send_error("not-authenticated", "Authenticate first.")
            return
        handler = {
            "ping": self.on_ping,
            "subscribe": self.on_subscribe,
            "unsubscribe": self.on_unsubscribe,
            "ack": self.on_ack,
            "resume": self.on_resume,
        }.get(kind)
        if handler is None:
            await self.send_error("unknown-type", f"Unknown message type {kind!r}.")
            return
        await handler(content)

    # --- client messages ----------------------------------------------------------------------
    async def on_ping(self, content: dict) -> None:
        await self.send_json({"type": "pong"})

    async def on_subscribe(self, content: dict) -> None:
        topics = await self._topics_of(content)
        if topics is not None:
            self.included = (self.included or set()) | topics
            self.excluded -= topics
            await self.send_json({"type": "subscribed", "topics": sorted(topics)})

    async def on_unsubscribe(self, content: dict) -> None:
        topics = await self._topics_of(content)
        if topics is not None:
            if self.included is None:
                self.excluded |= topics
            else:
                self.included -= topics
            await self.send_json({"type": "unsubscribed", "topics": sorted(topics)})

    async def on_ack(self, content: dict) -> None:
        notification_id = _uuid_or_none(content.get("id"))
        if notification_id is None:
            await self.send_error("invalid-message", "'ack' needs the notification's 'id'.")
            return
        found = await self.in_tenant(
            services.notification_acknowledge,
            user_id=self.principal.user.id,
            notification_id=notification_id,
        )
        if not found:
            await self.send_error("not-found", "No such notification.")
            return
        await self.send_json({"type": "acked", "id": str(notification_id)})

    async def on_resume(self, content: dict) -> None:
        after = content.get("after")
        after_id = _uuid_or_none(after)
        if after is not None and after_id is None:
            await self.send_error("invalid-message", "'after' is a notification id or null.")
            return
        replay = await self.in_tenant(self._replay, after_id)
        if replay is None:
            await self.send_error("not-found", "No such notification to resume after.")
            return
        sent = 0
        for seq, payload in replay:
            self.replayed_up_to = max(self.replayed_up_to, seq)
            if self._wants(payload["topic"]):
                await self.send_json({"type": "notification", **payload})
                sent += 1
        await self.send_json({"type": "resumed", "count": sent})

    def _replay(self, after_id) -> list[tuple[int, dict]] | None:
        user_id = self.principal.user.id
        after = None
        if after_id is not None:
            after = selectors.notification_get(user_id=user_id, notification_id=after_id)
            if after is None:
                return None
        return [
            (notification.seq, services.notification_payload(notification))
            for notification in selectors.notifications_after(user_id=user_id, after=after)
        ]

    async def _topics_of(self, content: dict) -> set[str] | None:
        topics = content.get("topics")
        if (
            not isinstance(topics, list)
            or not 0 < len(topics) <= MAX_TOPICS
            or not all(isinstance(t, str) and 0 < len(t) <= MAX_TOPIC_LENGTH for t in topics)
        ):
            await self.send_error(
                "invalid-message",
                f"'topics' is a list of 1 to {MAX_TOPICS} topic names or patterns.",
            )
            return None
        unknown = topics_registry.unknown_topics_detail(topics)
        if unknown is not None:
            await self.send_error("unknown-topic", unknown)
            return None
        return set(topics)

    def _wants(self, topic: str) -> bool:
        if not topics_registry.readable(topic, self.principal.permissions):
            return False
        if self.included is not None and not selectors.topic_matches(topic, self.included):
            return False
        return not selectors.topic_matches(topic, self.excluded)

    async def in_tenant(self, function, *args, **kwargs):
        """Run database work in a thread, inside this socket's tenant."""
        tenant_id = self.principal.tenant.id

        def run():
            with tenant_context(tenant_id):
                return function(*args, **kwargs)

        return await database_sync_to_async(run)()

    async def decode_json(self, text_data: str) -> Any:
        try:
            return await super().decode_json(text_data)
        except (ValueError, RecursionError):
            # Malformed, or nested deeper than the parser follows: answered as an invalid
            # message, never a dropped socket.
            return None

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        if text_data is None:
            await self.send_error("invalid-message", "Send text frames of JSON.")
            return
        # Before a message is parsed, on the event loop every socket shares: nobody makes the
        # server decode megabytes, least of all before saying who they are.
        if self.principal is None and len(text_data) > settings.WEBSOCKET_UNAUTHENTICATED_MAX_BYTES:
            await self.refuse(CLOSE_TOO_BIG, "message-too-big", "Authenticate first, briefly.")
            return
        if len(text_data) > settings.WEBSOCKET_MAX_MESSAGE_BYTES:
            await self.send_error(
                "message-too-big",
                f"Messages have at most {settings.WEBSOCKET_MAX_MESSAGE_BYTES} characters.",
            )
            return
        await super().receive(text_data=text_data, **kwargs)

    # --- authentication ---------------------------------------------------------------------
    async def authenticate(self, token: str, *, announce: bool = True) -> None:
        try:
            # The protocol's token is a person's access token (docs/api-conventions.md).
            principal = await database_sync_to_async(credentials.authenticate)("Bearer", token)
        except Problem as exc:
            if exc.problem_type is ProblemType.TENANT_SUSPENDED:
                await self.refuse(CLOSE_FORBIDDEN, "tenant-suspended", str(exc.detail))
                return
            raise
        except APIException:
            await self.refuse(CLOSE_UNAUTHENTICATED, "not-authenticated", "Invalid token.")
            return
        try:
            access.admit(principal, permission=Perm.NOTIFICATIONS_READ)
        except Problem as exc:
            slug = exc.problem_type.slug
            await self.refuse(CLOSE_FORBIDDEN, slug, str(exc.detail))
            return
        if self.principal is not None and (
            principal.tenant.id != self.principal.tenant.id
            or principal.user.id != self.principal.user.id
        ):
            await self.refuse(CLOSE_FORBIDDEN, "permission-denied", "A socket keeps its tenant.")
            return
        for timer in self.timers:
            timer.cancel()
        self.principal = principal
        self.token = token
        groups = [
            tenant_group(principal.tenant.id),
            user_group(principal.tenant.id, principal.user.id),
            session_group(principal.claims["sid"]),
        ]
        for group in groups:
            # Always (re-)added: it refreshes the membership's expiry in the channel layer.
            await self.channel_layer.group_add(group, self.channel_name)
            if group not in self.groups_joined:
                self.groups_joined.append(group)
        # The socket lives as long as its token: renew by sending a fresh one in an 'auth'.
        remaining = max(0.0, principal.claims["exp"] - time.time())
        self.timers = [
            asyncio.get_running_loop().call_later(
                remaining, self._close_soon, CLOSE_UNAUTHENTICATED, "token-expired"
            )
        ]
        if announce:
            await self.send_json({"type": "authenticated"})

    async def send_json(self, content, close=False) -> None:
        """Send, or give up on a client that stopped reading.

        The server waits while the connection's buffer is full, so without a deadline one slow
        client would hold its consumer, and its queue in the channel layer, forever. Past the
        deadline the connection is dropped: a close frame could not reach a client that reads
        nothing, so it sees an abnormal closure, reconnects and resumes without loss.
        """
        try:
            await asyncio.wait_for(
                super().send_json(content, close=close),
                timeout=settings.WEBSOCKET_SEND_TIMEOUT_SECONDS,
            )
        except TimeoutError:
            SLOW_SOCKETS_CLOSED.inc()
            log.warning("websocket_client_too_slow")
            await self.disconnect(CLOSE_ABNORMAL)
            raise StopConsumer() from None

    async def refuse(self, code: int, error: str, detail: str) -> None:
        await self.send_error(error, detail)
        await self.close(code=code)

    async def send_error(self, code: str, detail: str) -> None:
        await self.send_json({"type": "error", "code": code, "detail": detail})

    def _close_soon(self, code: int, error: str) -> None:
        # Kept on the consumer: the event loop holds tasks only weakly.
        self.closing = asyncio.ensure_future(self.refuse(code, error, "The socket is closed."))

    # --- events from the channel layer ------------------------------------------------------
    async def socket_close(self, event: dict) -> None:
        await self.refuse(event["code"], event["reason"], "The socket is closed.")

    async def notification_push(self, event: dict) -> None:
        if event["seq"] <= self.replayed_up_to or self.principal is None:
            return
        payload = event["notification"]
        if self._wants(payload["topic"]):
            # In the trace of the change it announces, linked to this socket's span.
            with tracing.resumed_trace(
                event,
                "notification push",
                kind=SpanKind.CONSUMER,
                **{
                    tracing.TENANT_ATTRIBUTE: str(self.principal.tenant.id),
                    "messaging.system": "channels",
                    "messaging.message.id": str(payload["id"]),
                },
            ):
                await self.send_json({"type": "notification", **payload})

    async def access_changed(self, event: dict) -> None:
        """Who may do what in the tenant changed: verify this socket's token again."""
        if self.principal is not None:
            await self.authenticate(self.token, announce=False)

    def _token_from_handshake(self) -> str | None:
        for name, value in self.scope.get("headers", []):
            if name == b"authorization":
                scheme, _, credential = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and credential:
                    return credential.strip()
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        tokens = query.get("token")
        return tokens[0] if tokens else None


def _uuid_or_none(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value is not None else None
    except ValueError:
        return None
