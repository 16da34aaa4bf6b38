"""The notifications WebSocket: `/ws/v1/notifications/` (protocol in docs/api-conventions.md).

Thin: it authenticates with the same checks as HTTP (tenants.authentication), joins the groups of
the verified principal, and answers the client's messages. The handshake is always accepted first
so that a bad or missing credential can be refused with close code 4401 (a refused handshake
would only show the client an HTTP 403).
"""

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from rest_framework.exceptions import APIException

from core.problems import Problem, ProblemType
from notifications.realtime import (
    CLOSE_FORBIDDEN,
    CLOSE_UNAUTHENTICATED,
    session_group,
    tenant_group,
    user_group,
)
from tenants.authentication import principal_from_access_token
from tenants.permissions import Perm
from tenants.principal import Principal


class NotificationConsumer(AsyncJsonWebsocketConsumer):
    principal: Principal | None = None

    async def connect(self) -> None:
        self.groups_joined: list[str] = []
        self.timers: list[asyncio.TimerHandle] = []
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
        if kind == "ping":
            await self.send_json({"type": "pong"})
            return
        await self.send_error("unknown-type", f"Unknown message type {kind!r}.")

    async def decode_json(self, text_data: str) -> Any:
        try:
            return await super().decode_json(text_data)
        except ValueError:
            return None  # answered as an invalid message, never a dropped socket

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        if text_data is None:
            await self.send_error("invalid-message", "Send text frames of JSON.")
            return
        await super().receive(text_data=text_data, **kwargs)

    # --- authentication ---------------------------------------------------------------------
    async def authenticate(self, token: str, *, announce: bool = True) -> None:
        try:
            principal = await database_sync_to_async(principal_from_access_token)(token)
        except Problem as exc:
            if exc.problem_type is ProblemType.TENANT_SUSPENDED:
                await self.refuse(CLOSE_FORBIDDEN, "tenant-suspended", str(exc.detail))
                return
            raise
        except APIException:
            await self.refuse(CLOSE_UNAUTHENTICATED, "not-authenticated", "Invalid token.")
            return
        if not principal.has_permission(Perm.NOTIFICATIONS_READ):
            await self.refuse(
                CLOSE_FORBIDDEN, "permission-denied", "notifications.read is required."
            )
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
            if group not in self.groups_joined:
                await self.channel_layer.group_add(group, self.channel_name)
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
