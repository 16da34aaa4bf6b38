"""Credential types: how a caller says who it is, and the one function every surface resolves a
credential through.

A credential is a scheme and a value, as in `Authorization: Bearer <access token>` or
`Authorization: Api-Key <key>`. Each kind of credential is a `CredentialType`, registered by the
app that owns it from its `AppConfig.ready()` (accounts registers access tokens and API keys; an
OAuth token or an SSO session registers the same way). The kernel knows none of them by name:

- REST: `kernel.api.authentication.CredentialAuthentication`, DRF's one authentication class,
  reads the `Authorization` header and calls `authenticate()`;
- WebSockets: the consumer calls `authenticate()` with the token the client sent;
- cached reads, answered before DRF: `kernel.api.cached_reads` calls the type's `read_cached`;
- the OpenAPI document lists each registered type's security scheme.

Whatever the surface, a credential that is refused raises DRF's AuthenticationFailed (401, the
same words for every way it can be wrong) or a Problem (a suspended tenant's 403); one that
passes gives the `Principal` the rest of the request acts as (kernel/principals.py).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpRequest
from rest_framework import exceptions

from kernel import audit
from kernel.context import enter_tenant_for_request
from kernel.principals import Principal
from kernel.tracing import bind_actor


def _nothing(principal: Principal) -> None:
    return None


def _any_credential(credential: bytes) -> bool:
    return True


@dataclass(frozen=True)
class CredentialType:
    # What the type is called: one registration per name.
    name: str
    # The scheme as clients write it before the credential: "Bearer", "Api-Key".
    scheme: str
    # The whole check of a credential's value (its bytes as sent): the principal it speaks for,
    # or AuthenticationFailed (401) / a Problem (403 tenant-suspended).
    verify: Callable[[bytes], Principal]
    # What a header with this scheme but not exactly one value after it gets.
    malformed: exceptions.AuthenticationFailed
    # The OpenAPI security scheme: its name in the document, and its definition.
    openapi_name: str
    openapi_definition: dict[str, Any]
    # Whether the scheme is matched case-sensitively, as simplejwt matches "Bearer".
    case_sensitive: bool = False
    # The fast form of `verify` for a GET that a cache entry answers: (request, credential, the
    # view's kernel.api.cached_reads.CachedRead, the permission it requires) -> the principal and
    # the stored entry, or None to leave the request to the view.
    read_cached: Callable[[HttpRequest, bytes, Any, str], tuple[Principal, Any] | None] | None = (
        None
    )
    # Called once per request the credential authenticated (an API key marks itself used).
    used: Callable[[Principal], None] = field(default=_nothing)
    # Whether a value under this scheme is of this type, for types that share a scheme (a
    # person's access token and a third-party app's OAuth token are both `Bearer`): the first
    # registered type of the scheme that recognizes the value verifies it.
    recognizes: Callable[[bytes], bool] = field(default=_any_credential)

    def takes_scheme(self, scheme: str) -> bool:
        if self.case_sensitive:
            return scheme == self.scheme
        return scheme.lower() == self.scheme.lower()


_types: list[CredentialType] = []


def register(credential_type: CredentialType) -> None:
    """Accept `credential_type` on every surface; registering a name again replaces the type."""
    _types[:] = [known for known in _types if known.name != credential_type.name]
    _types.append(credential_type)


def registered() -> tuple[CredentialType, ...]:
    """The registered types, in the order they were registered."""
    return tuple(_types)


def credential_type(scheme: str, credential: bytes) -> CredentialType | None:
    """The type of a credential, or None: a scheme of nobody's is no credential of ours."""
    for known in _types:
        if known.takes_scheme(scheme) and known.recognizes(credential):
            return known
    return None


def _scheme_owner(scheme: str) -> CredentialType | None:
    return next((known for known in _types if known.takes_scheme(scheme)), None)


def from_header(header: bytes) -> tuple[CredentialType, bytes] | None:
    """The credential of an `Authorization` header: None if it names no registered scheme (the
    caller is anonymous, as far as credentials go), the type's `malformed` refusal if the scheme
    is not followed by exactly one value."""
    parts = header.split()
    if not parts:
        return None
    scheme = parts[0].decode("latin-1")
    owner = _scheme_owner(scheme)
    if owner is None:
        return None
    if len(parts) != 2:
        raise owner.malformed
    return credential_type(scheme, parts[1]) or owner, parts[1]


def authenticate(scheme: str, credential: bytes | str) -> Principal:
    """The principal a credential speaks for, whatever the surface; AuthenticationFailed (401)
    for a scheme nobody registered, as for any credential that is refused."""
    value = credential.encode() if isinstance(credential, str) else credential
    found = credential_type(scheme, value)
    if found is None:
        raise exceptions.AuthenticationFailed("Unknown credential type.")
    return found.verify(value)


def challenge() -> str:
    """`WWW-Authenticate` of a 401: the first registered scheme's."""
    return f'{_types[0].scheme} realm="api"' if _types else 'Bearer realm="api"'


def act_for_request(principal: Principal) -> None:
    """The rest of the request acts as `principal`: in its tenant's scope, with it as the actor
    of log lines and audit events."""
    enter_tenant_for_request(principal.tenant.id)
    if principal.api_key is not None:
        bind_actor(tenant_id=principal.tenant.id, api_key_id=principal.api_key.id)
        audit.set_request_actor(audit.Actor.api_key(principal.api_key))
    else:
        bind_actor(
            tenant_id=principal.tenant.id,
            user_id=principal.user.id,
            app_id=principal.app.pk if principal.app is not None else None,
        )
        audit.set_request_actor(audit.Actor.user(principal.user, app=principal.app))
