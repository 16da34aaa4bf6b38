"""The real tables, as a typical project's models over them: unmanaged, since the catalog's
migrations made them (and seeded them)."""

import uuid

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.db import models


class User(AbstractBaseUser):
    """What simplejwt reads of a person: their id and whether they are active."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField(unique=True)
    is_active = models.BooleanField(default=True)

    objects = BaseUserManager()

    USERNAME_FIELD = "email"

    class Meta:
        managed = False
        db_table = "accounts_user"


class Category(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)

    class Meta:
        managed = False
        db_table = "catalog_category"

    def __str__(self) -> str:
        return self.name


def bench_tenant() -> str:
    return settings.BENCH_TENANT_ID


class Product(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.UUIDField(db_column="tenant_id", default=bench_tenant, editable=False)
    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    price = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3, default="EUR")
    stock = models.IntegerField(default=0)
    is_active = models.BooleanField(default=True)
    category = models.ForeignKey(Category, null=True, blank=True, on_delete=models.PROTECT)
    attributes = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=list, blank=True)
    version = models.PositiveIntegerField(default=1, editable=False)
    # The index CursorPagination's ordering needs: the catalog's own indexes all start with the
    # tenant, so scripts/bench_catalog.py creates it for the typical project's scenarios.
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        managed = False
        db_table = "catalog_product"

    def __str__(self) -> str:
        return self.sku
