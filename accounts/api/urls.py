from django.urls import path
from rest_framework.routers import SimpleRouter

from accounts.api import views
from accounts.api.api_keys import ApiKeyViewSet

router = SimpleRouter(use_regex_path=False)
router.register("api-keys", ApiKeyViewSet, basename="api-key")

urlpatterns = [
    path("auth/signup/", views.SignupView.as_view(), name="auth-signup"),
    path("auth/token/", views.TokenObtainView.as_view(), name="auth-token"),
    path("auth/token/refresh/", views.TokenRefreshRotateView.as_view(), name="auth-token-refresh"),
    path("auth/logout/", views.LogoutView.as_view(), name="auth-logout"),
    path("auth/me/", views.MeView.as_view(), name="auth-me"),
    path("auth/password/change/", views.PasswordChangeView.as_view(), name="auth-password-change"),
    path(
        "auth/password/reset/", views.PasswordResetRequestView.as_view(), name="auth-password-reset"
    ),
    path(
        "auth/password/reset/confirm/",
        views.PasswordResetConfirmView.as_view(),
        name="auth-password-reset-confirm",
    ),
    *router.urls,
]
