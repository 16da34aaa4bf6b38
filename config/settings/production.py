"""Production: secrets are required from the environment and every transport is secure.

`python manage.py check --deploy` passes with these settings and no warnings.
"""

from config.settings.base import *  # noqa: F403
from config.settings.base import env

DEBUG = False
# No default: start-up fails loudly rather than running with a generated key.
SECRET_KEY = env.str("SECRET_KEY")
SIMPLE_JWT["SIGNING_KEY"] = env.str("JWT_SIGNING_KEY", default="") or SECRET_KEY  # noqa: F405
# The OpenID Connect signing key (RSA, PEM): required, as the secret key is.
OAUTH2_PROVIDER["OIDC_RSA_PRIVATE_KEY"] = env.str("OIDC_RSA_PRIVATE_KEY", multiline=True)  # noqa: F405
# Operators sign in to the admin with a second factor (set up on their first sign-in).
ADMIN_REQUIRE_MFA = env.bool("ADMIN_REQUIRE_MFA", default=True)
# The keys that encrypt second-factor secrets (Fernet, newest first): required too.
MFA_ENCRYPTION_KEYS = env.list("MFA_ENCRYPTION_KEYS")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# Probes and Prometheus talk plain HTTP to the pod, behind the TLS-terminating proxy.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Cookies over HTTPS only. `SECURE_COOKIES=false` is for a stack served over plain HTTP on the
# machine it runs on (docker compose on localhost); `check --deploy` warns about it, rightly.
SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=True)
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
SERVE_STATIC = env.bool("SERVE_STATIC", default=False)
# The ASGI server is the WebSocket server: the API is gunicorn's (docs/serving.md).
ASGI_SERVE_HTTP = env.bool("ASGI_SERVE_HTTP", default=False)
