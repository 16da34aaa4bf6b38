"""What single sign-on keeps between the requests of one sign-in, as single-use tickets
(accounts/one_time.py):

- the *flow*, from the redirect to the provider until its callback, under the `state` sent to the
  provider: the tenant and its connection, the `nonce` and PKCE verifier, the front end's
  `redirect_uri` and own `state`, and the digest of the browser's binding cookie, so that a
  callback URL sent to somebody else's browser signs nobody in there (login CSRF);
- the *code*, from the callback until the front end exchanges it for tokens: who signs in, where.
"""

import hashlib
import hmac
import uuid
from dataclasses import asdict, dataclass

from django.conf import settings

from accounts import one_time

FLOW = "sso-flow"
CODE = "sso-code"


@dataclass(frozen=True)
class Flow:
    tenant_id: str
    connection_id: str
    issuer: str
    client_id: str
    nonce: str
    code_verifier: str
    redirect_uri: str
    client_state: str
    browser_digest: str

    def binds(self, browser_token: str | None) -> bool:
        return bool(browser_token) and hmac.compare_digest(
            self.browser_digest, browser_digest(browser_token or "")
        )


def browser_digest(browser_token: str) -> str:
    return hashlib.sha256(browser_token.encode()).hexdigest()


def begin(flow: Flow, *, state: str) -> None:
    """Keep `flow` under the `state` the provider will send back. The state is the provider
    request's own (authlib's: 30 random letters and digits): the ticket is keyed by its digest."""
    one_time.issue_as(FLOW, state, asdict(flow), seconds=settings.SSO_FLOW_SECONDS)


def finish(state: object) -> Flow | None:
    """The flow `state` began, spent: a state comes back once."""
    found = one_time.take(FLOW, state)
    return Flow(**found) if found is not None else None


def issue_code(*, user_id: uuid.UUID, tenant_id: uuid.UUID) -> str:
    return one_time.issue(
        CODE, {"user": str(user_id), "tenant": str(tenant_id)}, seconds=settings.SSO_CODE_SECONDS
    )


def redeem_code(code: object) -> tuple[uuid.UUID, uuid.UUID] | None:
    """(user id, tenant id) of a live code, spent by this call."""
    found = one_time.take(CODE, code)
    if found is None:
        return None
    return uuid.UUID(found["user"]), uuid.UUID(found["tenant"])
