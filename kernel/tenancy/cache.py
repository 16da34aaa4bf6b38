"""Cache keys namespaced by tenant, centrally.

The default cache's KEY_FUNCTION puts the tenant in context into every key, so no caller can
forget it and two tenants can never share an entry: `products:list` read under tenant A and under
tenant B are different keys. With no tenant in context the key lands in a shared namespace.

The `platform` cache alias has no tenant namespace, for the few things that belong to no tenant
(revoked sessions, limits per client address); its callers name their keys fully.
"""

from kernel.context import current_tenant_id


def tenant_key(key: str, key_prefix: str, version: int) -> str:
    tenant_id = current_tenant_id()
    namespace = f"t:{tenant_id}" if tenant_id is not None else "t:-"
    return f"{key_prefix}:{version}:{namespace}:{key}"


def platform_key(key: str, key_prefix: str, version: int) -> str:
    return f"{key_prefix}:{version}:platform:{key}"
