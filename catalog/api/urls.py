from django.urls import path
from rest_framework.routers import SimpleRouter

from catalog.api import bulk, views

# Path converters rather than regexes, so that ids are matched (and documented) as UUIDs.
# Django tries routes in order: the product list and detail, which take most of the requests,
# come first.
router = SimpleRouter(use_regex_path=False)
router.register("products", views.ProductViewSet, basename="product")
router.register("categories", views.CategoryViewSet, basename="category")

urlpatterns = [
    *router.urls,
    # After `products/<uuid:pk>/`, which cannot take them: "import" and "export" are no UUIDs.
    path("products/import/", bulk.ProductImportView.as_view(), name="product-import"),
    path("products/export/", bulk.ProductExportView.as_view(), name="product-export"),
]
