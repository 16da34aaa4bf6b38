from django.urls import path
from rest_framework.routers import SimpleRouter

from accounts.api import api_keys, mfa, sso, tenant, views

# Path converters rather than regexes, so that ids are matched (and documented) as UUIDs.
router = SimpleRouter(use_regex_path=False)
router.register("api-keys", api_keys.ApiKeyViewSet, basename="api-key")
router.register("roles", tenant.RoleViewSet, basename="role")
router.register("members", tenant.MemberViewSet, basename="member")
router.register("invitations", tenant.InvitationViewSet, basename="invitation")
router.register("audit-events", tenant.AuditEventViewSet, basename="audit-event")

urlpatterns = [
    path("auth/signup/", views.SignupView.as_view(), name="auth-signup"),
    path("auth/token/", views.TokenObtainView.as_view(), name="auth-token"),
    path("auth/token/refresh/", views.TokenRefreshRotateView.as_view(), name="auth-token-refresh"),
    path("auth/token/mfa/", mfa.TokenMfaView.as_view(), name="auth-token-mfa"),
    path("auth/token/sso/", sso.TokenSsoView.as_view(), name="auth-token-sso"),
    path("auth/sso/callback/", sso.SsoCallbackView.as_view(), name="auth-sso-callback"),
    path("auth/sso/<slug:tenant_slug>/start/", sso.SsoStartView.as_view(), name="auth-sso-start"),
    path("auth/mfa/", mfa.MfaStatusView.as_view(), name="auth-mfa"),
    path("auth/mfa/totp/", mfa.TotpView.as_view(), name="auth-mfa-totp"),
    path("auth/mfa/totp/confirm/", mfa.TotpConfirmView.as_view(), name="auth-mfa-totp-confirm"),
    path(
        "auth/mfa/recovery-codes/", mfa.RecoveryCodesView.as_view(), name="auth-mfa-recovery-codes"
    ),
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
    path("permissions/", tenant.PermissionListView.as_view(), name="permission-list"),
    path("tenant/", tenant.TenantView.as_view(), name="tenant"),
    path("tenant/sso/", sso.TenantSsoView.as_view(), name="tenant-sso"),
    path("invitations/accept/", tenant.InvitationAcceptView.as_view(), name="invitation-accept"),
    *router.urls,
]
