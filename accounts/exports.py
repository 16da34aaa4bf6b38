"""What accounts contributes to exports (kernel/exports/, docs/data.md): a tenant's API keys, and
a person's own account, second factor and single sign-on identities. Never a key's hash, a
password's hash, a TOTP secret, a recovery code or a client secret."""

import uuid
from collections.abc import Iterator

from accounts.models import ApiKey, RecoveryCode, SsoIdentity, TotpDevice, User

CHUNK_SIZE = 2000


def api_key_rows() -> Iterator[dict]:
    fields = (
        "id",
        "name",
        "prefix",
        "permissions",
        "expires_at",
        "last_used_at",
        "revoked_at",
        "created_by_id",
        "created_at",
    )
    return ApiKey.objects.order_by("created_at", "id").values(*fields).iterator(CHUNK_SIZE)


def account_rows(user_id: uuid.UUID) -> Iterator[dict]:
    """The person's account: one row, outside any tenant."""
    fields = ("id", "email", "name", "date_joined", "last_login", "is_active")
    for row in User.objects.filter(pk=user_id).values(*fields):
        row["second_factor"] = {
            "totp": TotpDevice.objects.filter(user_id=user_id, confirmed=True).exists(),
            "recovery_codes_left": RecoveryCode.objects.filter(
                user_id=user_id, used_at__isnull=True
            ).count(),
        }
        yield row


def sso_identity_rows(user_id: uuid.UUID) -> Iterator[dict]:
    """The person's identities at the tenant in context's identity provider."""
    fields = ("id", "issuer", "subject", "created_at", "last_sign_in_at")
    return SsoIdentity.objects.filter(user_id=user_id).order_by("created_at").values(*fields)


def created_api_key_rows(user_id: uuid.UUID) -> Iterator[dict]:
    """The API keys of the tenant in context that the person created."""
    fields = ("id", "name", "prefix", "permissions", "expires_at", "revoked_at", "created_at")
    return ApiKey.objects.filter(created_by_id=user_id).order_by("created_at").values(*fields)
