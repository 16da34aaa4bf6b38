from django.urls import include, path
from rest_framework.routers import DefaultRouter

from bench_typical.views import ProductViewSet, healthz

router = DefaultRouter()
router.register("products", ProductViewSet)

urlpatterns = [
    path("api/v1/", include(router.urls)),
    path("healthz", healthz),
]
