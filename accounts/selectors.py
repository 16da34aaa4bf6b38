"""Reads on accounts: API keys. Through the scoped manager, so the tenant in context only."""

from accounts.models import ApiKey
from kernel.tenancy.models import Tenant


def api_key_count(*, tenant: Tenant) -> int:
    """The keys that count against the plan's quota: those that still work."""
    return ApiKey.objects.filter(tenant=tenant).usable().count()
