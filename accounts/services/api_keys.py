"""Writes on a tenant's API keys: created, revoked. Keyword-only arguments, one transaction each."""

from collections.abc import Sequence
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from accounts import apikeys
from accounts.actions import AccountsAction
from accounts.models import ApiKey
from accounts.selectors import api_key_count
from kernel import audit
from kernel.principals import Principal, access_changed
from kernel.problems import InvalidInput, Problem, ProblemType
from kernel.quotas import Resource, enforce_quota
from kernel.tenancy.models import Tenant

User = get_user_model()


# --- API keys ----------------------------------------------------------------------------------


def _api_key_values(api_key: ApiKey) -> dict:
    return {
        "name": api_key.name,
        "prefix": api_key.prefix,
        "permissions": api_key.permissions,
        "expires_at": api_key.expires_at,
    }


@transaction.atomic
def api_key_create(
    *,
    tenant: Tenant,
    actor: Principal,
    name: str,
    permissions: Sequence[str],
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key for `tenant`, and the key itself: the only time it exists outside its holder.

    The key's permissions must be codes the actor holds (the API checks that they exist). A key
    made by another key cannot outlive it: with no expiry given it gets its creator's. Keys that
    still work count against the plan's `max_api_keys` (403 quota-exceeded past it).
    """
    codes = sorted(set(permissions))
    missing = sorted(set(codes) - actor.permissions)
    if missing:
        raise Problem(
            ProblemType.PERMISSION_DENIED,
            detail=f"An API key cannot be given permissions you do not hold: {', '.join(missing)}.",
        )
    creator_expiry = actor.api_key.expires_at if actor.api_key is not None else None
    if creator_expiry is not None:
        if expires_at is None:
            expires_at = creator_expiry
        elif expires_at > creator_expiry:
            raise InvalidInput(
                {"expires_at": ["A key cannot outlive the API key that creates it."]}
            )
    # Last before the INSERT: it locks the tenant until this transaction ends.
    enforce_quota(
        tenant=tenant, resource=Resource.API_KEYS, count=lambda: api_key_count(tenant=tenant)
    )
    new = apikeys.generate()
    api_key = ApiKey.objects.create(
        tenant=tenant,
        name=name,
        prefix=new.prefix,
        key_hash=new.key_hash,
        permissions=codes,
        expires_at=expires_at,
        created_by=actor.user,
    )
    audit.record(
        tenant_id=tenant.id,
        action=AccountsAction.API_KEY_CREATED,
        target_type="api_key",
        target_id=api_key.pk,
        changes=audit.created(_api_key_values(api_key)),
    )
    return api_key, new.key


@transaction.atomic
def api_key_revoke(*, tenant: Tenant, api_key: ApiKey) -> ApiKey:
    """Make the key unusable everywhere from the next request. The row stays, for the record.

    The tenant's access epoch moves on commit, so no process serves the key from its cache any
    more (accounts/apikeys.py). Revoking a revoked key changes nothing.
    """
    api_key = ApiKey.objects.select_for_update().get(tenant=tenant, pk=api_key.pk)
    if api_key.revoked_at is not None:
        return api_key
    api_key.revoked_at = timezone.now()
    api_key.save(update_fields=["revoked_at"])
    audit.record(
        tenant_id=tenant.id,
        action=AccountsAction.API_KEY_REVOKED,
        target_type="api_key",
        target_id=api_key.pk,
        changes={"revoked_at": [None, api_key.revoked_at]},
    )
    access_changed(tenant.id)
    return api_key
