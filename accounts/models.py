"""People and machines. A user is global (one email, one password); what they may do lives in
memberships. An API key belongs to one tenant and carries its own permission codes."""

import uuid

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django_otp.models import Device, ThrottlingMixin, TimestampMixin

from kernel.tenancy.models import TenantOwnedModel, TenantScopedManager, TenantScopedQuerySet


class UserManager(BaseUserManager):
    use_in_migrations = True

    def normalize_email(self, email: str) -> str:
        # Emails compare case-insensitively everywhere; store them lower-cased once.
        return (email or "").strip().lower()

    def create_user(self, email: str, password: str | None = None, **extra):
        if not email:
            raise ValueError("An email is required.")
        user = self.model(email=self.normalize_email(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra):
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(email, password, **extra)

    def get_by_natural_key(self, email: str):
        return self.get(email=self.normalize_email(email))


class User(AbstractBaseUser, PermissionsMixin):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Stored lower-cased (see save), so that uniqueness is case-insensitive.
    email = models.EmailField(max_length=254, unique=True)
    name = models.CharField(max_length=150, blank=True)
    is_active = models.BooleanField(default=True)
    # Staff are our operators: they use the Django admin, never the tenant API.
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)
    # Erasure (accounts/erasure.py): asked for (the account is deactivated at once), then done
    # (the email and name replaced by the person's pseudonym). Never undone.
    erasure_requested_at = models.DateTimeField(null=True, blank=True, editable=False)
    erased_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    def __str__(self) -> str:
        return self.email

    def save(self, *args, **kwargs):
        self.email = User.objects.normalize_email(self.email)
        super().save(*args, **kwargs)


class ApiKeyQuerySet(TenantScopedQuerySet):
    def unrevoked(self):
        """Not revoked, expired or not: what the API lists and what can still be revoked."""
        return self.filter(revoked_at__isnull=True)

    def usable(self):
        """Neither revoked nor expired."""
        return self.unrevoked().filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
        )


class ApiKey(TenantOwnedModel):
    """A credential for machines: `sk_live_<prefix>_<secret>`, acting in one tenant.

    Only an HMAC-SHA256 of the whole key is stored (accounts/apikeys.py); the prefix is stored in
    clear so that authentication can find the row before it knows the tenant. Revoking keeps the
    row, for the audit trail.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    # 12 random letters and digits. Unique with the tenant as every constraint of tenant data is
    # (docs/tenancy.md); 71 random bits make a clash across tenants a non-event, and
    # authentication checks the hash of every row that shares a prefix anyway.
    prefix = models.CharField(max_length=16, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    # Permission codes, a subset of its creator's when it was made.
    permissions = models.JSONField(default=list)
    expires_at = models.DateTimeField(null=True, blank=True)
    # Kept up to date within a minute or so, without a write per request (accounts/apikeys.py).
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedManager.from_queryset(ApiKeyQuerySet)()

    class Meta(TenantOwnedModel.Meta):
        ordering = ["-created_at"]
        verbose_name = "API key"
        indexes = [models.Index(fields=["prefix"], name="apikey_prefix_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "prefix"], name="apikey_prefix_unique_per_tenant"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"


# --- the second factor (accounts/mfa/) ------------------------------------------------------------
# A person's, not a tenant's: the second factor guards the account in every tenant it belongs to
# (like the password), so these are not tenant-owned rows; only the person's own requests and the
# services of accounts/mfa/ read them.


class TotpDevice(TimestampMixin, ThrottlingMixin, Device):
    """django-otp's device (user, name, confirmed) with throttling (each failure doubles the
    wait before the next code is looked at: 1, 2, 4 … seconds) and the RFC 6238 parameters every
    authenticator app assumes: SHA-1, 6 digits, 30-second steps. One per person; it verifies
    nothing until confirmed with a first code."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # The 20-byte secret, Fernet-encrypted (accounts/mfa/secrets.py): never stored in clear.
    encrypted_key = models.TextField()
    # The time step of the last code accepted: a code (and any older one) is accepted once.
    last_t = models.BigIntegerField(default=-1)

    class Meta:
        verbose_name = "TOTP device"
        constraints = [models.UniqueConstraint(fields=["user"], name="totp_device_one_per_user")]

    def __str__(self) -> str:
        return f"TOTP of {self.user_id}{'' if self.confirmed else ' (not confirmed)'}"

    def get_throttle_factor(self) -> int:
        return settings.MFA_THROTTLE_FACTOR


class RecoveryCode(models.Model):
    """One of a person's ten single-use codes, for when their authenticator is gone. Stored as a
    password is (PASSWORD_HASHERS: argon2), never as text: a copy of the table gives nobody a
    code. Checking one costs at most ten hashes, and only a code of their shape is checked."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="recovery_codes"
    )
    digest = models.CharField(max_length=128)
    used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "digest"], name="recovery_code_unique")
        ]

    def __str__(self) -> str:
        return f"recovery code of {self.user_id}{' (used)' if self.used_at else ''}"


# --- single sign-on (accounts/sso/) ---------------------------------------------------------------


class SsoConnection(TenantOwnedModel):
    """A tenant's own OpenID Connect provider: at most one per tenant, set by an owner.

    Its people sign in there; the ones whose verified email is of one of `domains` become members
    with `default_role` on their first sign-in; with `enforced`, those may no longer sign in with
    a password (an owner still may: the break-glass path, audited).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    issuer = models.URLField(max_length=255)
    client_id = models.CharField(max_length=255)
    # Fernet-encrypted with MFA_ENCRYPTION_KEYS (accounts/mfa/secrets.py); write-only in the API.
    encrypted_client_secret = models.TextField(editable=False)
    # Lower-case domain names, as they follow the @ of an email.
    domains = models.JSONField(default=list)
    # Where the tenant's own front end takes the one-time code: exact-match.
    redirect_uris = models.JSONField(default=list)
    enforced = models.BooleanField(default=False)
    default_role = models.ForeignKey(
        "tenants.Role", on_delete=models.PROTECT, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwnedModel.Meta):
        verbose_name = "single sign-on connection"
        constraints = [
            models.UniqueConstraint(fields=["tenant"], name="sso_connection_one_per_tenant")
        ]

    def __str__(self) -> str:
        return self.issuer


class SsoIdentity(TenantOwnedModel):
    """Who a subject of the tenant's provider is here: the link made on their first sign-in, so
    that an email the provider later gives to somebody else never opens the first person's
    account."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    issuer = models.URLField(max_length=255)
    subject = models.CharField(max_length=255)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_identities"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_sign_in_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantOwnedModel.Meta):
        verbose_name = "single sign-on identity"
        verbose_name_plural = "single sign-on identities"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "issuer", "subject"], name="sso_identity_unique_subject"
            ),
            models.UniqueConstraint(
                fields=["tenant", "issuer", "user"], name="sso_identity_one_per_user"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.subject}@{self.issuer}"
