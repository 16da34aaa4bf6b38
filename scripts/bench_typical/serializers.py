from rest_framework import serializers

from bench_typical.models import Product


class ProductSerializer(serializers.ModelSerializer):
    """The fields our product list returns, in its order."""

    class Meta:
        model = Product
        fields = [
            "id", "sku", "name", "description", "price", "currency", "stock", "is_active",
            "category", "tags", "attributes", "version", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["id", "version", "created_at", "updated_at"]
