"""People and machines. A user is global (one email, one password); what they may do lives in
memberships. An API key belongs to one tenant and carries its own permission codes."""

import uuid

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models
from django.db.models import Q
from django.utils import timezone

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
