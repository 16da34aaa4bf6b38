"""What the ASGI server lets reach Django's HTTP handler (config/asgi.py).

Django's ASGI handler reads a request's whole body, spooling it to disk, before any middleware
runs: the body limit that `ProblemDetailsMiddleware` enforces under gunicorn would come only after
an attacker's 60 MB had been taken in. `BodyLimit` refuses a body over its route's limit before a
byte of it is read: at once when `Content-Length` says so, and as soon as a streamed body (chunked,
no length) passes it.

The WebSocket server is not the API's server (docs/serving.md): with production settings it
serves WebSockets only (`ASGI_SERVE_HTTP=false`), and its HTTP is `HealthOnly`: `/healthz` and
`/readyz` for its probes, `/metrics` for Prometheus, a 404 problem for everything else. The
embedded default and a single-process deployment serve both (`ASGI_SERVE_HTTP=true`), behind
`BodyLimit`.
"""

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from kernel import tracing
from kernel.middleware import body_limit_for
from kernel.problems import PROBLEM_CONTENT_TYPE, ProblemType

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# What the WebSocket server's HTTP answers: its probes, and its metrics for Prometheus (sockets,
# pushes dropped), which /metrics guards itself (loopback, METRICS_ALLOWED_IPS, the token).
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


async def send_problem(send: Send, scope: Scope, problem_type: ProblemType, detail: str) -> None:
    """A problem+json response, sent without Django (no request exists yet)."""
    body = json.dumps(
        {
            "type": problem_type.uri,
            "title": problem_type.title,
            "status": problem_type.status,
            "detail": detail,
            "instance": scope.get("path", ""),
        }
    ).encode()
    headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    # The server span's, with tracing set up; otherwise the request's trace, or a new one, as
    # RequestIdMiddleware answers (kernel/tracing.py).
    token = tracing.enter_trace({"traceparent": _header(scope, b"traceparent")})
    try:
        if value := tracing.trace_response():
            headers.append((tracing.TRACE_RESPONSE_HEADER.encode(), value.encode()))
    finally:
        tracing.leave_trace(token)
    await send({"type": "http.response.start", "status": problem_type.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    value = dict(scope.get("headers") or ()).get(name)
    return value.decode("latin-1") if value is not None else None


class BodyLimit:
    """Refuse (413) a request body over its route's limit before Django reads it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = body_limit_for(scope.get("path", ""))
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                return await send_problem(
                    send, scope, ProblemType.MALFORMED_REQUEST, "Content-Length is not a number."
                )
            if length > limit:
                return await send_problem(
                    send,
                    scope,
                    ProblemType.PAYLOAD_TOO_LARGE,
                    f"The request body is {length} bytes; the limit is {limit}.",
                )
        return await self.app(scope, _counted(receive, send, scope, limit), send)


def _counted(receive: Receive, send: Send, scope: Scope, limit: int) -> Receive:
    """`receive`, cut off once the body passes `limit`: the client gets the 413 and the handler
    a disconnect, so that it stops reading and answers nothing more."""
    received = 0
    refused = False

    async def counted() -> Message:
        nonlocal received, refused
        if refused:
            return {"type": "http.disconnect"}
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                refused = True
                await send_problem(
                    send,
                    scope,
                    ProblemType.PAYLOAD_TOO_LARGE,
                    f"The request body is over the limit of {limit} bytes.",
                )
                return {"type": "http.disconnect"}
        return message

    return counted


class HealthOnly:
    """The HTTP of the WebSocket server: its probes and metrics, a 404 problem for anything
    else."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in PROBES:
            return await self.app(scope, receive, send)
        return await send_problem(
            send,
            scope,
            ProblemType.NOT_FOUND,
            "This server serves WebSockets; the API is served elsewhere.",
        )
