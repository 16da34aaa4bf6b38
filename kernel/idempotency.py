"""`Idempotency-Key` for POST handlers: decorate the handler and retries become safe.

    class ProductViewSet(TenantViewSet):
        @idempotent
        def create(self, request, *args, **kwargs): ...

The semantics (docs/catalog.md, ../API conventions):

- The key is 1-255 visible ASCII characters; anything else is a 400.
- Records live in the default cache, which is namespaced by tenant (kernel/tenancy/cache.py), under
  the credential that sent the request (the user, or the API key): the same key from another
  tenant or another credential is another record. They last IDEMPOTENCY_TTL_SECONDS (24 h).
- The first request claims the key atomically (`cache.add`) before the handler runs. A second
  one with the same key while the first is running gets 409 `idempotency-key-in-use`.
- A successful (2xx) response is stored once its transaction has committed, with a fingerprint
  of the request (method, path and body); a retry with the same fingerprint gets it back
  (status, body, Location) with `Idempotent-Replayed: true`, and the handler does not run.
  The same key with another fingerprint is a 422 `idempotency-key-reused`.
- An error response, or an exception, releases the claim and stores nothing: the client may
  fix the request and retry with the same key.
- If the cache is unavailable the request is refused with 503 rather than run without the
  guarantee the client asked for (it may then retry, or retry without the key).
"""

import functools
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import structlog
from django.conf import settings
from django.core.cache import cache
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from kernel.context import current_tenant_id, tenant_context
from kernel.problems import Problem, ProblemType
from kernel.redis import REDIS_ERRORS

log = structlog.get_logger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
# 1 to MAX_KEY_LENGTH visible ASCII characters: what a key may be, here and in the OpenAPI
# document (a JSON Schema pattern; `re.fullmatch` reads it the same way).
KEY_PATTERN = rf"^[!-~]{{1,{MAX_KEY_LENGTH}}}$"
# How long a claim holds when its request never finishes (a crashed worker): longer than any
# request may run, short enough that the client is not locked out of its key for long.
CLAIM_SECONDS = 60
# Headers of the first response that a replay repeats.
REPLAYED_HEADERS = ("Location", "ETag")
_IN_FLIGHT = "in-flight"
_DONE = "done"


def idempotent(handler: Callable[..., Response]) -> Callable[..., Response]:
    """Make a DRF POST handler honour `Idempotency-Key` (see the module docstring)."""

    @functools.wraps(handler)
    def wrapper(view: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.headers.get(HEADER)
        if key is None:
            return handler(view, request, *args, **kwargs)
        _validate_key(key)
        record_key = _record_key(request, key)
        fingerprint = _fingerprint(request)
        claim = {"state": _IN_FLIGHT, "fingerprint": fingerprint}

        if not _cache("add", record_key, claim, timeout=CLAIM_SECONDS):
            return _answer_existing(record_key, fingerprint)
        try:
            response = handler(view, request, *args, **kwargs)
        except BaseException:
            _release(record_key)
            raise
        if not 200 <= response.status_code < 300:
            _release(record_key)
            return response

        record = {
            "state": _DONE,
            "fingerprint": fingerprint,
            "status": response.status_code,
            "data": response.data,
            "headers": {name: response[name] for name in REPLAYED_HEADERS if name in response},
        }
        # Stored when the data it describes is committed; if the transaction rolls back, the
        # claim expires instead and the client's retry runs afresh. The tenant is captured now:
        # the key's namespace must not depend on where the commit happens to run.
        tenant_id = current_tenant_id()
        transaction.on_commit(lambda: _store(record_key, record, tenant_id), robust=True)
        return response

    return wrapper


def _answer_existing(record_key: str, fingerprint: str) -> Response:
    record = _cache("get", record_key)
    if record is None:
        # The claim was released (or expired) between our add and our get: the other request
        # failed, and so may this one be retried.
        raise Problem(
            ProblemType.IDEMPOTENCY_KEY_IN_USE,
            detail="A request with this Idempotency-Key just finished or failed; retry.",
        )
    if record["fingerprint"] != fingerprint:
        raise Problem(ProblemType.IDEMPOTENCY_KEY_REUSED)
    if record["state"] != _DONE:
        raise Problem(ProblemType.IDEMPOTENCY_KEY_IN_USE)
    headers = {**record["headers"], REPLAYED_HEADER: "true"}
    return Response(record["data"], status=record["status"], headers=headers)


def _validate_key(key: str) -> None:
    if not re.fullmatch(KEY_PATTERN, key):
        raise ValidationError(
            {
                HEADER: [
                    f"Must be 1 to {MAX_KEY_LENGTH} visible ASCII characters (a UUID is a "
                    "good choice)."
                ]
            },
            code="invalid",
        )


def _record_key(request: Request, key: str) -> str:
    principal = request.auth
    api_key = getattr(principal, "api_key", None)
    user = getattr(principal, "user", None)
    if api_key is not None:
        credential = f"api-key:{api_key.pk}"
    elif user is not None:
        credential = f"user:{user.pk}"
    else:  # every view that uses this authenticates first; refuse rather than share records
        raise Problem(ProblemType.NOT_AUTHENTICATED)
    # Hashed: the key is the client's text, of any length and alphabet the rules allow.
    return f"idempotency:{credential}:{hashlib.sha256(key.encode()).hexdigest()}"


def _fingerprint(request: Request) -> str:
    """The request as it matters for "the same request": method, path and body.

    A JSON body is compared by its meaning, so that a client re-serialising it (other key order,
    other spacing) still retries the same request; any other body by its bytes.
    """
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode())
    if request.content_type.split(";")[0].strip().lower() in ("application/json", ""):
        digest.update(
            json.dumps(
                request.data, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder
            ).encode()
        )
    else:
        digest.update(request.body)
    return digest.hexdigest()


def _store(record_key: str, record: dict[str, Any], tenant_id: uuid.UUID | None) -> None:
    try:
        with tenant_context(tenant_id) if tenant_id is not None else nullcontext():
            cache.set(record_key, record, timeout=settings.IDEMPOTENCY_TTL_SECONDS)
    except REDIS_ERRORS:
        # The resource exists; a retry now runs again and may duplicate it. Nothing better is
        # possible with the store gone: say so loudly.
        log.error("idempotency_record_not_stored")


def _release(record_key: str) -> None:
    try:
        cache.delete(record_key)
    except REDIS_ERRORS:
        log.warning("idempotency_claim_not_released")


def _cache(operation: str, *args: Any, **kwargs: Any) -> Any:
    try:
        return getattr(cache, operation)(*args, **kwargs)
    except REDIS_ERRORS as exc:
        log.warning("idempotency_store_unavailable", error=type(exc).__name__)
        raise Problem(
            ProblemType.SERVICE_UNAVAILABLE,
            detail="Idempotency-Key cannot be honoured right now; retry later.",
            headers={"Retry-After": "5"},
        ) from exc
