"""The audit actions of third-party apps (kernel/audit.py). The values are what the audit log
stores: they never change."""

from enum import StrEnum


class OAuthAction(StrEnum):
    APP_CREATED = "oauth.app.created"
    APP_UPDATED = "oauth.app.updated"
    APP_DELETED = "oauth.app.deleted"
    GRANT_CREATED = "oauth.grant.created"
    GRANT_UPDATED = "oauth.grant.updated"
    GRANT_REVOKED = "oauth.grant.revoked"
    CODE_REPLAYED = "oauth.code.replayed"
