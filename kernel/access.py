"""The kernel's checks of one request, whichever surface it came in by: the tenant is active, the
rate limits admit it, the principal holds the permission the action needs.

REST runs them in DRF's order (kernel/api/base.py: the limits right after authentication, so that
refused requests are counted too, then the permission classes, which call `permits`); a surface
without DRF's request cycle (the WebSocket consumer, GraphQL) calls `admit` once the credential
gave it a principal (kernel/credentials.py).
"""

from typing import Any

from kernel import ratelimit, tracing
from kernel.principals import Principal
from kernel.problems import Problem, ProblemType


def admit_second_factor(principal: Principal) -> None:
    """Return unless the principal is held to setting up a second factor (its tenant requires
    one, it has none): then the 403 problem that says so."""
    if principal.held_to_enrolment:
        raise Problem(
            ProblemType.MFA_ENROLLMENT_REQUIRED,
            detail="This tenant requires two-factor authentication: set it up first "
            "(POST /api/v1/auth/mfa/totp/, then /api/v1/auth/mfa/totp/confirm/).",
        )


def permits(principal: Principal, permission: str | None) -> bool:
    """Whether `principal` may do what needs `permission` (None: nothing beyond a principal)."""
    return permission is None or principal.has_permission(permission)


def admit_permission(principal: Principal, permission: str | None) -> None:
    """Return if `principal` holds `permission`; else the 403 problem that names it."""
    if permission is not None:
        # On the request's span: which permission let it through, or refused it.
        tracing.set_span_attribute(tracing.PERMISSION_ATTRIBUTE, permission)
    if not permits(principal, permission):
        raise Problem(
            ProblemType.PERMISSION_DENIED,
            detail=f"This action needs {permission}.",
            extra={"required_permission": permission},
        )


def admit(principal: Principal, *, permission: str | None, request: Any = None) -> None:
    """Return if the request may go on; raise the problem its caller gets otherwise: 403
    `tenant-suspended`, 403 `mfa-enrollment-required`, 429 `rate-limited` (when there is an HTTP
    `request` to count), 403 `permission-denied` naming the permission."""
    if not principal.tenant.is_active:
        raise Problem(ProblemType.TENANT_SUSPENDED, detail="This tenant is suspended.")
    admit_second_factor(principal)
    if request is not None:
        ratelimit.limit_api_request(request)
    admit_permission(principal, permission)
