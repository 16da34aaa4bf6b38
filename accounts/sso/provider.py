"""A tenant's OpenID Connect provider, as a client speaks to it: authlib does the protocol
(the authorization request with PKCE, `state` and `nonce`; the code exchange; the ID token's
signature against the provider's JWKS and its `iss`, `aud`, `exp`, `iat` and `nonce`); this module
chooses what authlib is given and turns every failure into one of two errors a person can act on.

Every request to the provider goes through `kernel.outbound`: an issuer (and each endpoint its
discovery document names) must resolve to public addresses only, and the connection goes to the
address that was checked. `SSO_ALLOW_INSECURE_ISSUERS` (tests and local development only) admits
`http://` on loopback, and nothing else that is not public.

The discovery document and the JWKS are cached together for SSO_DISCOVERY_SECONDS; an ID token
signed with a key the cached set does not hold makes authlib fetch the set once more (a key
rotation at the provider), and nothing else does.
"""

import hashlib
from dataclasses import dataclass
from typing import Any

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.base_client import BaseApp, OAuthError
from authlib.integrations.base_client.sync_app import OAuth2Mixin
from authlib.integrations.base_client.sync_openid import OpenIDMixin
from authlib.integrations.requests_client import OAuth2Session
from django.conf import settings
from django.core.cache import cache
from joserfc.errors import JoseError

from kernel import outbound
from kernel.context import no_tenant

SCOPES = "openid email profile"
DISCOVERY_PATH = "/.well-known/openid-configuration"
# ID tokens are verified with the provider's published keys only: never `none`, never a MAC keyed
# with the client secret.
SIGNING_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
# How far the provider's clock may be from ours, for `exp` and `iat`.
CLOCK_SKEW_SECONDS = 60


class ProviderUnavailable(Exception):
    """The provider could not be reached, or answered with something that is not OpenID
    Connect: nobody's fault here, try later (502)."""


class SignInRejected(Exception):
    """The provider's answer does not sign this person in: a refusal, a code or ID token that
    does not verify (401)."""


class ProviderMisconfigured(ValueError):
    """What the tenant entered does not describe a usable provider (400, on the field)."""


@dataclass(frozen=True)
class Authorization:
    url: str
    state: str
    nonce: str
    code_verifier: str


def insecure_issuers_allowed() -> bool:
    return bool(getattr(settings, "SSO_ALLOW_INSECURE_ISSUERS", False))


def checked_target(url: str) -> outbound.Target:
    """Where a request to the provider may go: public addresses over https; with
    SSO_ALLOW_INSECURE_ISSUERS, loopback too, over http or https. UnsafeTarget otherwise."""
    insecure = insecure_issuers_allowed()
    target = outbound.resolve_target(url, allow_private=insecure)
    if insecure and not all(_public_or_loopback(address) for address in target.addresses):
        raise outbound.UnsafeTarget(outbound.NOT_PUBLIC, detail=f"{target.host} is not loopback")
    return target


def _public_or_loopback(address: outbound.IPAddress) -> bool:
    return address.is_loopback or outbound.refusal_reason(address) is None


def check_issuer(issuer: str) -> None:
    """For an issuer being saved: its shape and address (ProviderMisconfigured), then its
    discovery document, fetched now (ProviderUnavailable, ProviderMisconfigured), so that a typo
    is found by the owner who made it and not by the first person signing in."""
    try:
        checked_target(issuer)
    except outbound.UnsafeTarget as exc:
        raise ProviderMisconfigured(str(exc)) from exc
    metadata(issuer, fresh=True)


def metadata(issuer: str, *, fresh: bool = False) -> dict[str, Any]:
    """The provider's discovery document, with its JWKS under `jwks`: from the cache unless
    `fresh` or expired."""
    with no_tenant():
        found = None if fresh else cache.get(_metadata_key(issuer))
    if isinstance(found, dict):
        return found
    document = _discover(issuer)
    _remember(issuer, document)
    return document


def _remember(issuer: str, document: dict[str, Any]) -> None:
    with no_tenant():
        cache.set(_metadata_key(issuer), document, timeout=settings.SSO_DISCOVERY_SECONDS)


def _metadata_key(issuer: str) -> str:
    return f"sso-provider:{hashlib.sha256(issuer.encode()).hexdigest()}"


def _discover(issuer: str) -> dict[str, Any]:
    document = _get_json(issuer.rstrip("/") + DISCOVERY_PATH, what="discovery document")
    # OpenID Connect Discovery 1.0, section 4.3: the issuer it names must be the one asked.
    if document.get("issuer") != issuer:
        raise ProviderMisconfigured(
            f"The provider's discovery document names the issuer {document.get('issuer')!r}, "
            f"not {issuer!r}: enter the issuer exactly as the provider names it."
        )
    for endpoint in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not isinstance(document.get(endpoint), str) or not document[endpoint]:
            raise ProviderUnavailable(f"The provider's discovery document has no {endpoint}.")
    listed = document.get("id_token_signing_alg_values_supported") or ["RS256"]
    algorithms = [alg for alg in listed if alg in SIGNING_ALGORITHMS]
    if not algorithms:
        raise ProviderMisconfigured(
            "The provider signs ID tokens with none of the algorithms accepted: "
            f"{', '.join(SIGNING_ALGORITHMS)}."
        )
    document["id_token_signing_alg_values_supported"] = algorithms
    document["jwks"] = _get_json(document["jwks_uri"], what="key set")
    return document


def _get_json(url: str, *, what: str) -> dict[str, Any]:
    try:
        with _CheckedSession() as session:
            response = session.get(
                url, timeout=settings.SSO_HTTP_TIMEOUT, allow_redirects=False, withhold_token=True
            )
        response.raise_for_status()
        document = response.json()
    except outbound.UnsafeTarget as exc:
        raise ProviderMisconfigured(
            f"The provider's {what} is at a refused address: {exc}"
        ) from exc
    except (requests.RequestException, ValueError) as exc:
        raise ProviderUnavailable(
            f"The identity provider's {what} could not be read ({type(exc).__name__})."
        ) from exc
    if not isinstance(document, dict):
        raise ProviderUnavailable(f"The identity provider's {what} is not a JSON object.")
    return document


def authorization(*, issuer: str, client_id: str, redirect_uri: str) -> Authorization:
    """Where to send the person: the provider's authorization endpoint, with a fresh `state`,
    `nonce` and PKCE verifier (S256)."""
    started = _client(metadata(issuer), client_id, "").create_authorization_url(redirect_uri)
    return Authorization(
        url=started["url"],
        state=started["state"],
        nonce=started["nonce"],
        code_verifier=started["code_verifier"],
    )


def verified_claims(
    *,
    issuer: str,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    code: str,
    code_verifier: str,
    nonce: str,
) -> dict[str, Any]:
    """Exchange the code (with its PKCE verifier) and verify the ID token that comes back: the
    token's claims, or ProviderUnavailable / SignInRejected."""
    known = metadata(issuer)
    client = _client(known, client_id, client_secret)
    try:
        token = client.fetch_access_token(
            redirect_uri=redirect_uri, code=code, code_verifier=code_verifier
        )
    except OAuthError as exc:
        raise SignInRejected(
            f"The identity provider refused the code ({exc.error or 'error'}); start again."
        ) from exc
    except outbound.UnsafeTarget as exc:
        raise ProviderUnavailable(f"The provider's token endpoint is refused: {exc}") from exc
    except (requests.RequestException, ValueError) as exc:
        raise ProviderUnavailable(
            f"The identity provider could not be reached ({type(exc).__name__})."
        ) from exc
    if not isinstance(token, dict) or "id_token" not in token:
        raise SignInRejected("The identity provider sent no ID token.")
    try:
        claims = client.parse_id_token(token, nonce=nonce, leeway=CLOCK_SKEW_SECONDS)
    except (requests.RequestException, outbound.UnsafeTarget) as exc:
        raise ProviderUnavailable("The identity provider's key set could not be read.") from exc
    except (JoseError, AuthlibBaseError, ValueError, RuntimeError) as exc:
        raise SignInRejected(f"The ID token is not valid: {_reason(exc)}") from exc
    if client.server_metadata.get("jwks") != known.get("jwks"):
        # The provider rotated its keys and authlib fetched the new set: keep it.
        _remember(issuer, client.server_metadata)
    return dict(claims)


def _reason(exc: Exception) -> str:
    # authlib's and joserfc's own words name the claim or the check, never a secret.
    words = getattr(exc, "description", None) or getattr(exc, "error", None) or str(exc)
    return str(words)[:200] or type(exc).__name__


def _client(known: dict[str, Any], client_id: str, client_secret: str) -> "_ProviderClient":
    return _ProviderClient(
        framework=None,
        name="sso",
        client_id=client_id,
        client_secret=client_secret,
        client_kwargs={
            "scope": SCOPES,
            "code_challenge_method": "S256",
            "token_endpoint_auth_method": "client_secret_basic",
            "default_timeout": settings.SSO_HTTP_TIMEOUT,
        },
        **known,
    )


class _CheckedSession(OAuth2Session):
    """authlib's requests session, connecting only where `checked_target` allows, with no proxy
    from the environment."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.trust_env = False
        adapter = outbound.CheckedAddressAdapter(checked_target)
        self.mount("https://", adapter)
        self.mount("http://", adapter)


class _ProviderClient(OAuth2Mixin, OpenIDMixin, BaseApp):
    client_cls = _CheckedSession
