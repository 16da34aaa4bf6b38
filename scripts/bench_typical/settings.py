"""Settings of the typical project: startproject's, plus DRF, simplejwt, django-filter and
django-redis as their documentation sets them up.

Read from the environment scripts/bench_catalog.py sets for its servers: the same SECRET_KEY
(simplejwt signs with it, as ours does when JWT_SIGNING_KEY is unset, so the bench's access token
verifies here), DATABASE_URL (connected as that URL's user with Django's own PostgreSQL backend:
no role switch, no row-level security) and REDIS_URL.
"""

import os

import environ

env = environ.Env()

SECRET_KEY = env.str("SECRET_KEY")
DEBUG = False
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "bench_typical",
]

# startproject's, unchanged.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "bench_typical.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db_url("DATABASE_URL")}
DATABASES["default"]["ENGINE"] = "django.db.backends.postgresql"
# Persistent connections, as our servers keep them: startproject's default (a new connection
# a request) would measure connecting, which no production project leaves on.
DATABASES["default"]["CONN_MAX_AGE"] = 60
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": env.str("REDIS_URL"),
        # Under the run's prefix, so that the benchmark's clean-up deletes these keys too.
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX"),
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
    }
}

# The user table is the real one (accounts_user), through an unmanaged model of this app.
AUTH_USER_MODEL = "bench_typical.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
}

# simplejwt's defaults (HS256, the `user_id` claim, the `id` field, signed with SECRET_KEY)
# are how our tokens are signed; only the header type is named, as our settings do.
SIMPLE_JWT = {"AUTH_HEADER_TYPES": ("Bearer",)}

# The product a POST creates belongs somewhere: the table is a multi-tenant one, and the typical
# project has a single tenant, the bench's, written as a column default it never filters by.
BENCH_TENANT_ID = env.str("BENCH_TENANT_ID")

# config/gunicorn.conf.py, shared with our servers, imports kernel.metrics, which reads this.
PROMETHEUS_METRIC_NAMESPACE = os.environ.get("PROMETHEUS_METRIC_NAMESPACE", "tenantapi")
