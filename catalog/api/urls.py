from django.urls import path
from rest_framework.routers import SimpleRouter

from catalog.api import bulk, views

# Path converters rather than regexes, so that ids are matched (and documented) as UUIDs.
router = SimpleRouter(use_regex_path=False)
router.register("categories", views.CategoryViewSet, basename="category")
router.register("products", views.ProductViewSet, basename="product")
router.register("jobs", bulk.JobViewSet, basename="job")

urlpatterns = [
    # Before the router's routes: `products/<uuid:pk>/` would not match them anyway, but a
    # reader should not have to know that.
    path("products/import/", bulk.ProductImportView.as_view(), name="product-import"),
    path("products/export/", bulk.ProductExportView.as_view(), name="product-export"),
    *router.urls,
]
