"""Serializer fields of the tenant resources that more than one app's API takes."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from kernel.permissions import Perm


@extend_schema_field(
    {
        "type": "string",
        "enum": [code.value for code in Perm],
        "description": "A permission code (GET /api/v1/permissions/ lists them).",
    }
)
class PermissionCodeField(serializers.CharField):
    """A permission code, as text: the serializer checks it against the Permission table (which
    `Perm` fills, see kernel/tenancy/reference_data.py), and the document lists `Perm`'s codes."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 64)
        super().__init__(**kwargs)
