"""Third-party apps, the consents people give them, and what ties django-oauth-toolkit's tokens
to the one (user, tenant) they act for.

- `App` is django-oauth-toolkit's application (OAUTH2_PROVIDER_APPLICATION_MODEL), owned by the
  tenant that registered it. The protocol finds an app by its `client_id` before any tenant is
  known, and a person of any tenant may be asked to authorize it (the consent page offers the
  person's tenants): the registry is global, as a client id is, and its default manager is
  django-oauth-toolkit's. What a tenant manages goes through `App.in_tenant`, scoped as every
  tenant-owned model is. The table holds no tenant data beyond the app's own registration (its
  secret is hashed).
- `Consent` is a person's authorization of one app in one tenant: what `/api/v1/oauth-grants/`
  lists and revokes. Tenant-owned, under row-level security.
- `TokenFamily` is one authorization code and every token descended from it (the refresh tokens
  of a family carry its id as django-oauth-toolkit's `token_family`); `IssuedToken` ties each
  access token to its family. A replayed code revokes its family; revoking a consent revokes
  all of its families. Both carry the tenant, under row-level security: the protocol's
  endpoints, which learn the tenant from the code or token they are given, run in operator
  scope (oauth/views.py), and name the tenant of every row they write.
"""

import uuid

from django.conf import settings
from django.db import models
from oauth2_provider.models import AbstractApplication, ApplicationManager

from kernel.tenancy.models import TenantOwnedModel, TenantScopedManager


class App(AbstractApplication):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # The tenant that registered the app. Not a TenantOwnedModel, so not under row-level
    # security: see the module's docstring.
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, editable=False, related_name="+"
    )
    # The scopes the app may ask for: tenant permission codes, and the identity scopes.
    scopes = models.JSONField(default=list)

    # Global: the protocol's look-ups by client_id (django-oauth-toolkit reads `objects`).
    objects = ApplicationManager()
    # Scoped to the tenant in context, failing closed without one: every management path.
    in_tenant = TenantScopedManager()

    class Meta:
        verbose_name = "OAuth app"
        ordering = ["-created"]

    def get_allowed_schemes(self) -> list[str]:
        # `http` is registered for loopback URIs only (RFC 8252: a native app's local server);
        # the API refuses it anywhere else (oauth/api/views.py).
        return ["https", "http"]

    def redirect_uri_allowed(self, uri: str) -> bool:
        """Exact match with a registered URI: no wildcards, no added query, no other port."""
        return uri in self.redirect_uris.split()


class Consent(TenantOwnedModel):
    """A person's consent that `app` act for them in the tenant, within `scopes`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="consents")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oauth_consents"
    )
    # The scopes granted, sorted: what the consent page showed and the person allowed.
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwnedModel.Meta):
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "app", "user"], name="oauth_consent_unique_per_app_and_user"
            )
        ]


class TokenFamily(TenantOwnedModel):
    """One authorization code and the tokens issued from it, refreshed ones included."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    consent = models.ForeignKey(Consent, on_delete=models.CASCADE, related_name="families")
    # SHA-256 of the code: the code itself is not kept once it is issued.
    code_checksum = models.CharField(max_length=64, unique=True)
    # Set when the code is exchanged: a second exchange is a replay.
    code_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"token family {self.id}"


class IssuedToken(TenantOwnedModel):
    """The family of one of django-oauth-toolkit's access tokens (and so its consent)."""

    access_token = models.OneToOneField(
        "oauth2_provider.AccessToken",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="issued",
    )
    family = models.ForeignKey(TokenFamily, on_delete=models.CASCADE, related_name="tokens")

    def __str__(self) -> str:
        return f"access token {self.access_token_id} of family {self.family_id}"
