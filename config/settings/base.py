"""Settings shared by every environment, read from the process environment (twelve-factor).

With nothing set this is the embedded default: SQLite, a local-memory cache, an in-memory channel
layer and Celery tasks run inline. Setting DATABASE_URL, REDIS_URL and CELERY_BROKER_URL switches
each piece to the real service. Every variable is listed in the README.
"""

import ipaddress
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from config.settings.brokers import celery_broker_conf
from config.settings.secrets import (
    development_mfa_key,
    development_secret_key,
    development_signing_key,
    pem_blocks,
)
from config.settings.sentinel import (
    cache_options,
    celery_result_backend_options,
    channel_layer_host,
    sentinel_addresses,
    sentinel_location,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="") or development_secret_key(VAR_DIR)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # The admin, with the site that runs every admin view in operator scope.
    "kernel.admin_site.OperatorAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "corsheaders",
    "django_prometheus",
    "channels",
    "kernel",
    "kernel.tenancy",
    "accounts",
    "catalog",
    "notifications",
    "oauth2_provider",
    "oauth",
    "webhooks",
    "graphql_api",
]

MIDDLEWARE = [
    # Every request counted and timed once, from the edge, by view and by tenant plan, with the
    # status that finally leaves (kernel/metrics.py).
    "kernel.metrics.RequestMetricsMiddleware",
    "kernel.tracing.RequestIdMiddleware",
    # Where a request's reads go: a replica for safe ones, once DATABASE_REPLICA_URLS is set.
    "kernel.replicas.ReplicaRoutingMiddleware",
    "kernel.middleware.TenantScopeMiddleware",
    # Outside ProblemDetailsMiddleware so that the 413 it answers on its own, before anything
    # further in runs, still carries the CORS headers a browser needs to read it.
    "corsheaders.middleware.CorsMiddleware",
    # RateLimit-* headers on every API response; outside ProblemDetailsMiddleware so that it sees
    # that middleware's own answers (a 413) too (kernel/ratelimit/middleware.py).
    "kernel.ratelimit.RateLimitMiddleware",
    # Everything further in is covered by its guarantees (kernel/middleware.py): its errors,
    # exceptions and Django's own error pages all leave as problem+json.
    "kernel.middleware.ProblemDetailsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Sessions and CSRF stay Django's own, by name: `check --deploy` looks for these very names
    # before checking the session and CSRF cookies' settings. For a token-authenticated request
    # they cost a cookie lookup each (DRF's views are CSRF-exempt, and no session is loaded).
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    # Django's, for the pages a person signs in to with a browser (the admin, OAuth's consent):
    # the token-authenticated surfaces (TOKEN_PATH_PREFIXES) pass straight through them, since
    # a bearer token needs no user from a session and no flash messages.
    "kernel.middleware.AuthenticationMiddleware",
    "kernel.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# The surfaces a bearer token (or an API key) authenticates, never a session cookie: the REST
# API and GraphQL. They skip the browser's middleware above.
TOKEN_PATH_PREFIXES = ("/api/", "/graphql/")

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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

# --- Database -----------------------------------------------------------------------------------
# PostgreSQL in every real deployment; SQLite only for the embedded default. Persistent connections
# with health checks suit WSGI workers; DATABASE_POOL=true swaps them for psycopg's pool, which is
# the right choice under ASGI, where a connection per thread would otherwise pile up.
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["ENGINE"] = "django_prometheus.db.backends.sqlite3"
# The restricted role every application transaction runs as (SET LOCAL ROLE), so that row-level
# security applies even when DATABASE_URL names a superuser. `migrate` creates and grants it.
DATABASE_APP_ROLE = env.str("DATABASE_APP_ROLE", default="tenantapi_app")
# A connection refuses to serve when that role (or, without one, the login role) is a superuser
# or BYPASSRLS: row security would not apply. `true` on a development machine that means it.
DATABASE_ALLOW_PRIVILEGED_ROLE = env.bool("DATABASE_ALLOW_PRIVILEGED_ROLE", default=False)
DATABASE_IS_POSTGRES = DATABASES["default"]["ENGINE"].endswith("postgresql")
if DATABASE_IS_POSTGRES:
    DATABASES["default"]["ENGINE"] = "kernel.tenancy.dbbackend"
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"]["assume_role"] = DATABASE_APP_ROLE
    if env.bool("DATABASE_POOL", default=False):
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=2),
            "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=10),
            "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
        }
    else:
        DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"]["OPTIONS"].setdefault(
        "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=5)
    )

# Streaming replicas of the primary, for safe reads (kernel/replicas.py, docs/scale-out.md): each
# URL becomes an alias `replica0`, `replica1`… through the same backend, role and row-level
# security as the primary. A replica answers within DATABASE_REPLICA_CONNECT_TIMEOUT or is skipped.
DATABASE_REPLICA_URLS = (
    env.list("DATABASE_REPLICA_URLS", default=[]) if DATABASE_IS_POSTGRES else []
)
for _n, _url in enumerate(DATABASE_REPLICA_URLS):
    _replica = env.db_url_config(_url)
    _replica.update(
        ENGINE=DATABASES["default"]["ENGINE"],
        CONN_MAX_AGE=DATABASES["default"].get("CONN_MAX_AGE", 0),
        CONN_HEALTH_CHECKS=True,
        # A test database is the primary's: the replica has it already, by replication.
        TEST={"MIRROR": "default"},
    )
    _replica["OPTIONS"] = {
        **DATABASES["default"]["OPTIONS"],
        "connect_timeout": env.int("DATABASE_REPLICA_CONNECT_TIMEOUT", default=2),
    }
    _replica["OPTIONS"].pop("pool", None)
    DATABASES[f"replica{_n}"] = _replica
DATABASE_ROUTERS = ["kernel.replicas.DatabaseRouter"] if DATABASE_REPLICA_URLS else []
# After a write, the same credential reads the primary for this long (marked in Redis, so that
# it holds across processes): it sees its own writes whatever the replicas' lag.
READ_YOUR_WRITES_SECONDS = env.int("READ_YOUR_WRITES_SECONDS", default=5)
# A replica whose replay is further behind is skipped until it catches up.
REPLICA_MAX_LAG_SECONDS = env.float("REPLICA_MAX_LAG_SECONDS", default=5.0)
# How often each process asks each replica how far behind it is.
REPLICA_CHECK_SECONDS = env.float("REPLICA_CHECK_SECONDS", default=1.0)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache, channel layer, Celery ---------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
# Redis behind Sentinel (config/settings/sentinel.py, docs/scale-out.md): the sentinels,
# `host:port,…`, and the name they monitor the primary under. Every Redis user then asks them
# where the primary is; REDIS_URL gives only the credentials and the database number.
REDIS_SENTINELS = sentinel_addresses(env.str("REDIS_SENTINELS", default=""))
REDIS_SENTINEL_MASTER = env.str("REDIS_SENTINEL_MASTER", default="tenantapi")
# The sentinels' own password (their `requirepass`), if they have one.
REDIS_SENTINEL_PASSWORD = env.str("REDIS_SENTINEL_PASSWORD", default="")
if REDIS_SENTINELS:
    REDIS_URL = sentinel_location(REDIS_URL, REDIS_SENTINEL_MASTER)
if REDIS_URL:
    _redis_cache = {
        # django-redis, instrumented by django-prometheus for /metrics.
        "BACKEND": "django_prometheus.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="tenantapi"),
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "SOCKET_CONNECT_TIMEOUT": 1,
            "SOCKET_TIMEOUT": 1,
        },
    }
    if REDIS_SENTINELS:
        _redis_cache["LOCATION"] = [REDIS_URL]  # the primary only (config/settings/sentinel.py)
        _redis_cache["OPTIONS"].update(cache_options(REDIS_SENTINELS, REDIS_SENTINEL_PASSWORD))
    # Every key of the default cache carries the tenant in context (kernel/tenancy/cache.py); the
    # platform cache holds what belongs to no tenant (revoked sessions, per-address limits).
    CACHES = {
        "default": {**_redis_cache, "KEY_FUNCTION": "kernel.tenancy.cache.tenant_key"},
        "platform": {**_redis_cache, "KEY_FUNCTION": "kernel.tenancy.cache.platform_key"},
    }
    # redis-py 8 reads with a 5 s socket timeout by default, and channels-redis waits for
    # messages with a 5 s blocking pop on the same connection: left alone, every idle socket's
    # receive times out and the socket dies. Reads get 15 s, so only a Redis that truly stopped
    # answering trips it.
    _layer_connection = {
        "socket_timeout": 15,
        "socket_connect_timeout": 2,
        "socket_keepalive": True,
        "health_check_interval": 30,
    }
    CHANNEL_LAYERS = {
        "default": {
            # Behind Sentinel, a layer whose wait for messages outlives a failover
            # (kernel/channel_layer.py).
            "BACKEND": "kernel.channel_layer.FailoverRedisChannelLayer"
            if REDIS_SENTINELS
            else "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    channel_layer_host(
                        REDIS_URL,
                        REDIS_SENTINEL_MASTER,
                        REDIS_SENTINELS,
                        REDIS_SENTINEL_PASSWORD,
                        **_layer_connection,
                    )
                    if REDIS_SENTINELS
                    else {"address": REDIS_URL, **_layer_connection}
                ],
                "prefix": env.str("CHANNELS_PREFIX", default="asgi"),
                # Messages waiting for one server process (channels-redis queues all of a
                # process's sockets under one key) before further ones are dropped and counted.
                # Sized for a fan-out to thousands of sockets; nothing is lost past it, since
                # notifications are stored before they are pushed.
                "capacity": env.int("CHANNEL_LAYER_CAPACITY", default=10000),
                # Seconds an undelivered message waits in Redis.
                "expiry": env.int("CHANNEL_LAYER_EXPIRY", default=60),
                # Group membership outlives any socket: each re-joins at every credential
                # check (token renewal, access change), which refreshes it.
                "group_expiry": 86400,
            },
        }
    }
else:
    _locmem = "django_prometheus.cache.backends.locmem.LocMemCache"
    CACHES = {
        "default": {"BACKEND": _locmem, "KEY_FUNCTION": "kernel.tenancy.cache.tenant_key"},
        "platform": {
            "BACKEND": _locmem,
            "LOCATION": "platform",
            "KEY_FUNCTION": "kernel.tenancy.cache.platform_key",
        },
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# How long a member's resolved permissions may be served from the cache; every change to them
# invalidates at once, this only bounds what an unforeseen path could leave stale.
PRINCIPAL_CACHE_SECONDS = env.int("PRINCIPAL_CACHE_SECONDS", default=300)
# Cached reads check the tenant's access epoch, the session's revocation mark and the catalog's
# version from each process's memory, which Redis keeps exact by pushing invalidations
# (kernel/tracked.py). Off: every cached read asks Redis for them, in its rate limit's round trip.
CACHED_READ_TRACKING = env.bool("CACHED_READ_TRACKING", default=bool(REDIS_URL))
# How long those values are trusted after the tracking connection last answered: a connection
# that died without a word (a partition) can leave a process this far behind, and no further.
CACHED_READ_TRACKING_CONFIRM_SECONDS = env.float(
    "CACHED_READ_TRACKING_CONFIRM_SECONDS", default=1.0
)
# A socket whose client has not read what was sent within this many seconds is closed.
WEBSOCKET_SEND_TIMEOUT_SECONDS = env.float("WEBSOCKET_SEND_TIMEOUT_SECONDS", default=10.0)
# A socket that has not authenticated this long after connecting is closed with 4401.
WEBSOCKET_AUTH_TIMEOUT_SECONDS = env.float("WEBSOCKET_AUTH_TIMEOUT_SECONDS", default=10.0)

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
# With no broker the embedded default runs every task inline, in the caller's process.
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=not CELERY_BROKER_URL)
CELERY_TASK_EAGER_PROPAGATES = True
# With a host named: kombu warns about a URL without one ("No hostname was supplied") whenever
# it describes the connection, which a clean start must not print.
CELERY_BROKER_URL = CELERY_BROKER_URL or "memory://localhost/"
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="") or None
# A Redis result backend behind Sentinel (`sentinel://host:port/db;sentinel://…`): the service
# to find the primary of (config/settings/sentinel.py).
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = celery_result_backend_options(
    CELERY_RESULT_BACKEND, REDIS_SENTINEL_MASTER, REDIS_SENTINEL_PASSWORD
)
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Every task is idempotent (a domain event's handlers, a webhook delivery keyed by its id, jobs
# that start over when redelivered): acknowledged once it ended, and requeued when its worker
# died under it, so that a lost worker loses no task. Which runs some tasks twice, by design.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One message per pool process at a time: a long job (an import, an export) never holds a message
# another idle worker could run, and one slow webhook receiver holds back nothing behind it.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Webhook tasks go to their own queue (webhooks/tasks.py); see the README's worker
# command. A list, so that other routers can join.
CELERY_TASK_ROUTES = ["webhooks.tasks.route_webhook_tasks"]
# What depends on the broker (config/settings/brokers.py): with RabbitMQ, the production broker,
# quorum queues on topic exchanges and publisher confirms; with Redis, the visibility timeout.
# CELERY_BROKER_TRANSPORT_OPTIONS (JSON, e.g. {"visibility_timeout": 7200}) is laid over the
# broker's defaults.
_broker = celery_broker_conf(
    CELERY_BROKER_URL, env.json("CELERY_BROKER_TRANSPORT_OPTIONS", default={})
)
CELERY_TASK_DEFAULT_QUEUE_TYPE = _broker["task_default_queue_type"]
CELERY_TASK_CREATE_MISSING_QUEUE_TYPE = _broker["task_create_missing_queue_type"]
CELERY_TASK_DEFAULT_EXCHANGE_TYPE = _broker["task_default_exchange_type"]
CELERY_TASK_CREATE_MISSING_QUEUE_EXCHANGE_TYPE = _broker["task_create_missing_queue_exchange_type"]
CELERY_WORKER_DETECT_QUORUM_QUEUES = _broker["worker_detect_quorum_queues"]
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = _broker[
    "worker_cancel_long_running_tasks_on_connection_loss"
]
CELERY_BROKER_TRANSPORT_OPTIONS = _broker["broker_transport_options"]
# Domain events (kernel.events) wait in a transactional outbox until their handlers have run
# (kernel/events/outbox.py). The relay sends an event again when it is still there this many
# seconds after it was published (the broker refused it, a worker lost it, a handler failed), then
# at doubling intervals of at most an hour. Keep it well above the usual queue latency: an event
# sent again while its first task is merely waiting runs its (idempotent) handlers twice.
OUTBOX_RELAY_DELAY_SECONDS = env.int("OUTBOX_RELAY_DELAY_SECONDS", default=300)
# How many events one relay run sends at most (the rest wait for the next minute's run).
OUTBOX_RELAY_BATCH_SIZE = env.int("OUTBOX_RELAY_BATCH_SIZE", default=500)
# An event sent this many times is never dropped, but logs `outbox_event_stuck` at each further
# send and counts in the tenantapi_outbox_stuck gauge.
OUTBOX_ALERT_ATTEMPTS = env.int("OUTBOX_ALERT_ATTEMPTS", default=10)
CELERY_BEAT_SCHEDULE: dict = {
    # Domain events still in the outbox after OUTBOX_RELAY_DELAY_SECONDS (kernel/events/outbox.py).
    # A run that waited longer than the interval in the queue is dropped: the next one does its
    # work.
    "outbox-relay": {
        "task": "core.tasks.outbox_relay_task",
        "schedule": timedelta(minutes=1),
        "options": {"expires": 55},
    },
    # API keys' last_used_at, from the marks each use leaves in the cache (accounts/apikeys.py).
    "api-key-last-used-flush": {
        "task": "accounts.tasks.api_key_last_used_flush_task",
        "schedule": timedelta(minutes=1),
    },
    # Expired OAuth codes and tokens (oauth/tasks.py); hourly, so that each run deletes little.
    "oauth-clear-expired": {
        "task": "oauth.tasks.oauth_clear_expired_task",
        "schedule": timedelta(hours=1),
    },
    # Audit events past their tenant's retention (its plan's, or less: kernel/retention.py), and
    # the platform's past AUDIT_RETENTION_DAYS; hourly, so that each run deletes little.
    "audit-prune": {
        "task": "tenants.tasks.audit_prune_task",
        "schedule": timedelta(hours=1),
    },
    # Notifications past their tenant's retention (kernel/retention.py).
    "notifications-prune": {
        "task": "notifications.tasks.notifications_prune_task",
        "schedule": timedelta(hours=1),
    },
    # Erasures asked for and not done yet (their job lost with a broker): queued again.
    "user-erasure-sweep": {
        "task": "accounts.tasks.user_erasure_sweep_task",
        "schedule": timedelta(minutes=15),
    },
    # Export archives whose link has expired (kernel/exports/services.py).
    "exports-delete-expired": {
        "task": "kernel.tasks.export_archives_delete_task",
        "schedule": timedelta(hours=1),
    },
    # Each tenant's audit hash chain, from where the last run left it (kernel/audit_chain.py).
    "audit-chain-verify": {
        "task": "tenants.tasks.audit_chain_verify_task",
        "schedule": timedelta(minutes=15),
        "options": {"expires": 14 * 60},
    },
}

# --- Auth -----------------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    # Accepted for hashes imported from other systems; re-hashed with Argon2id at next login.
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.BCryptPasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- REST API -------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_VERSIONING_CLASS": "rest_framework.versioning.URLPathVersioning",
    "DEFAULT_VERSION": "v1",
    "ALLOWED_VERSIONS": ["v1"],
    # People with an access token; machines with `Authorization: Api-Key <key>`.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Every credential type registered with the kernel (kernel/credentials.py).
        "kernel.api.authentication.CredentialAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["kernel.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "kernel.openapi.ProblemAutoSchema",
    # An unknown ?format= is a 400 naming the parameter, not DRF's 404.
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "kernel.negotiation.ContentNegotiation",
    "EXCEPTION_HANDLER": "kernel.problems.exception_handler",
    # Keyset cursors for every list: {"results", "next", "previous"}, ?page_size= up to 100.
    "DEFAULT_PAGINATION_CLASS": "kernel.pagination.CursorPagination",
    "UNAUTHENTICATED_USER": None,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Tenant API",
    "DESCRIPTION": "Multi-tenant REST API. Errors are RFC 9457 problem details.",
    "VERSION": "1.0.0",
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Two models have a `status` with different choices: name their enums apart.
    "ENUM_NAME_OVERRIDES": {
        "TenantStatusEnum": "kernel.tenancy.models.Tenant.Status",
        "InvitationStatusEnum": "kernel.tenancy.models.Invitation.Status",
        "WebhookDeliveryStatusEnum": "webhooks.models.WebhookDelivery.Status",
        "JobStatusEnum": "kernel.models.Job.Status",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "kernel.openapi.add_problem_components",
    ],
}

# Problem `type` URIs are this plus the problem's slug (kernel/problems.py, docs/errors.md).
PROBLEM_TYPE_BASE_URL = env.str("PROBLEM_TYPE_BASE_URL", default="https://docs.example/problems/")
# A CSRF failure (the admin's forms) is a 403 problem that names Django's reason.
CSRF_FAILURE_VIEW = "kernel.problems.csrf_failure"

ACCESS_TOKEN_LIFETIME = timedelta(minutes=env.int("ACCESS_TOKEN_LIFETIME_MINUTES", default=15))
REFRESH_TOKEN_LIFETIME = timedelta(days=env.int("REFRESH_TOKEN_LIFETIME_DAYS", default=7))
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": ACCESS_TOKEN_LIFETIME,
    "REFRESH_TOKEN_LIFETIME": REFRESH_TOKEN_LIFETIME,
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": env.str("JWT_SIGNING_KEY", default="") or SECRET_KEY,
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "user_id",
    "AUTH_HEADER_TYPES": ("Bearer",),
    # Tokens carry a digest of the password hash: changing the password revokes them all.
    "CHECK_REVOKE_TOKEN": True,
    "REVOKE_TOKEN_CLAIM": "pwd",
    "TOKEN_OBTAIN_SERIALIZER": "accounts.api.serializers.TokenObtainSerializer",
    "TOKEN_REFRESH_SERIALIZER": "accounts.api.serializers.TokenRefreshSerializer",
}

# --- Third-party apps: the OAuth 2.0 and OpenID Connect provider (oauth/, docs/oauth.md) -------
# django-oauth-toolkit's models, all named: its migrations read each of these settings.
OAUTH2_PROVIDER_APPLICATION_MODEL = "oauth.App"
OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL = "oauth2_provider.AccessToken"  # noqa: S105  (a model)
OAUTH2_PROVIDER_REFRESH_TOKEN_MODEL = "oauth2_provider.RefreshToken"  # noqa: S105  (a model)
OAUTH2_PROVIDER_ID_TOKEN_MODEL = "oauth2_provider.IDToken"  # noqa: S105  (a model)
OAUTH2_PROVIDER_GRANT_MODEL = "oauth2_provider.Grant"
# The ID tokens' signing key (RSA, PEM) and the retired ones still published in the JWKS while
# tokens they signed live on (docs/oauth.md, "Rotating the signing key"). A development server
# without one generates its own, kept in var/.
OIDC_RSA_PRIVATE_KEY = env.str("OIDC_RSA_PRIVATE_KEY", default="", multiline=True)
OAUTH2_PROVIDER = {
    "OAUTH2_VALIDATOR_CLASS": "oauth.validator.Validator",
    "SCOPES_BACKEND_CLASS": "oauth.scopes.Scopes",
    "APPLICATION_ADMIN_CLASS": "oauth.admin.AppAdmin",
    "ACCESS_TOKEN_ADMIN_CLASS": "oauth.admin.AccessTokenAdmin",
    "REFRESH_TOKEN_ADMIN_CLASS": "oauth.admin.RefreshTokenAdmin",
    "GRANT_ADMIN_CLASS": "oauth.admin.GrantAdmin",
    "ID_TOKEN_ADMIN_CLASS": "oauth.admin.IDTokenAdmin",
    "OIDC_ENABLED": True,
    "OIDC_RSA_PRIVATE_KEY": OIDC_RSA_PRIVATE_KEY or development_signing_key(VAR_DIR),
    "OIDC_RSA_PRIVATE_KEYS_INACTIVE": pem_blocks(
        env.str("OIDC_RSA_PRIVATE_KEYS_INACTIVE", default="", multiline=True)
    ),
    # The issuer, when the server cannot tell it from the request (behind a proxy that rewrites
    # the host): "https://api.example.com".
    "OIDC_ISS_ENDPOINT": env.str("OAUTH_ISSUER", default=""),
    "OIDC_RESPONSE_TYPES_SUPPORTED": ["code"],
    "OAUTH2_RESPONSE_TYPES_SUPPORTED": ["code"],
    "OAUTH2_GRANT_TYPES_SUPPORTED": ["authorization_code", "refresh_token"],
    # Authorization code with PKCE, S256 only, for every client (RFC 9700).
    "PKCE_REQUIRED": True,
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": 60,
    "ACCESS_TOKEN_EXPIRE_SECONDS": env.int("OAUTH_ACCESS_TOKEN_SECONDS", default=60 * 60),
    "ID_TOKEN_EXPIRE_SECONDS": 60 * 60,
    "REFRESH_TOKEN_EXPIRE_SECONDS": env.int("OAUTH_REFRESH_TOKEN_DAYS", default=30) * 86400,
    "ROTATE_REFRESH_TOKEN": True,
    # A refresh token used twice revokes every token of its family.
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    # Every consent is asked for: a client cannot skip the page (approval_prompt=auto).
    "REQUEST_APPROVAL_PROMPT": "force",
    # https only; an app's loopback `http` URIs (RFC 8252), the only http ones the API registers,
    # are allowed by the app itself (oauth.models.App.get_allowed_schemes).
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https"],
    # The current best practice (RFC 9700), every gate django-oauth-toolkit has: tokens kept
    # only as hashes, no implicit or password grant, no `plain` PKCE, tokens never in a URL,
    # `iss` in the authorization response.
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_SCHEME": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_MATCHING": True,
}
# Where the authorization page sends a person with no session: the sign-in page of oauth/; and
# where a sign-in there that names no page to go back to lands: the service's index.
LOGIN_URL = "oauth-sign-in"
LOGIN_REDIRECT_URL = "index"

# --- Catalog ------------------------------------------------------------------------------------
# How long product (and category) list pages and details stay cached; every write invalidates
# them at once through a per-tenant version (docs/catalog.md), so these only bound memory.
CATALOG_LIST_CACHE_SECONDS = env.int("CATALOG_LIST_CACHE_SECONDS", default=60 * 60)
CATALOG_DETAIL_CACHE_SECONDS = env.int("CATALOG_DETAIL_CACHE_SECONDS", default=30 * 60)
# How many related products a product's detail shows.
CATALOG_RELATED_LIMIT = env.int("CATALOG_RELATED_LIMIT", default=5)
# Bulk import (docs/catalog.md): the largest file accepted, and how many rows go in one batch
# (one transaction, one upsert statement). The export reads rows from the database this many at
# a time.
CATALOG_IMPORT_MAX_BYTES = env.int("CATALOG_IMPORT_MAX_BYTES", default=20 * 1024 * 1024)
CATALOG_IMPORT_BATCH_SIZE = env.int("CATALOG_IMPORT_BATCH_SIZE", default=1000)
CATALOG_EXPORT_CHUNK_SIZE = env.int("CATALOG_EXPORT_CHUNK_SIZE", default=2000)
# --- The second factor (docs/security.md, "Account security") -------------------------------------
# Fernet keys that encrypt TOTP secrets at rest, newest first: a secret is encrypted with the first
# and decrypted with any, so that a key is rotated by putting the new one first and running
# `manage.py rotate_mfa_keys`. Required in production; a development server derives one from its
# secret key.
MFA_ENCRYPTION_KEYS = env.list("MFA_ENCRYPTION_KEYS", default=[]) or [
    development_mfa_key(SECRET_KEY)
]
# The issuer an authenticator app shows beside the account.
MFA_ISSUER = env.str("MFA_ISSUER", default="tenantapi")
# How long a sign-in waits for its second factor (the `mfa_token`).
MFA_CHALLENGE_SECONDS = env.int("MFA_CHALLENGE_SECONDS", default=5 * 60)
# Operators must have a second factor: one without it is sent to set it up in the admin and can
# do nothing else there until they have. On by default in production.
ADMIN_REQUIRE_MFA = env.bool("ADMIN_REQUIRE_MFA", default=False)
# django-otp's throttling of a device: after n failures in a row, no code is looked at for
# factor * 2^(n-1) seconds.
MFA_THROTTLE_FACTOR = env.int("MFA_THROTTLE_FACTOR", default=1)

# --- Single sign-on with a tenant's OpenID Connect provider (docs/security.md) -------------------
# Issuers must be https and resolve to public addresses; true (tests and local development only)
# also admits http:// and https:// on loopback. Refused by `check --deploy`.
SSO_ALLOW_INSECURE_ISSUERS = env.bool("SSO_ALLOW_INSECURE_ISSUERS", default=False)
# How long a provider's discovery document and key set are kept (a key the set lacks is fetched
# at once, whatever this says).
SSO_DISCOVERY_SECONDS = env.int("SSO_DISCOVERY_SECONDS", default=60 * 60)
# How long a person may take at the provider; how long the one-time code waits for the front end.
SSO_FLOW_SECONDS = env.int("SSO_FLOW_SECONDS", default=10 * 60)
SSO_CODE_SECONDS = env.int("SSO_CODE_SECONDS", default=60)
# Seconds to connect to the provider, and again to read each answer.
SSO_HTTP_TIMEOUT = env.float("SSO_HTTP_TIMEOUT", default=5.0)

# --- GraphQL (docs/graphql.md) -------------------------------------------------------------------
# Limits a document must stay within before it runs (graphql_api/limits.py): fields nested in
# fields, the objects its answer can hold (a connection's `first` multiplies what is under it),
# aliases of one field, and the document's size. One rate-limit token per request, and one more
# per GRAPHQL_COST_PER_TOKEN objects of cost beyond the first.
GRAPHQL_MAX_DEPTH = env.int("GRAPHQL_MAX_DEPTH", default=10)
GRAPHQL_MAX_COST = env.int("GRAPHQL_MAX_COST", default=1000)
GRAPHQL_MAX_ALIASES = env.int("GRAPHQL_MAX_ALIASES", default=20)
GRAPHQL_MAX_DOCUMENT_BYTES = env.int("GRAPHQL_MAX_DOCUMENT_BYTES", default=16 * 1024)
GRAPHQL_COST_PER_TOKEN = env.int("GRAPHQL_COST_PER_TOKEN", default=100)
# Introspection answers with the whole schema; off in production unless asked for. The SDL is
# at /graphql/schema.graphql for signed-in clients either way.
GRAPHQL_INTROSPECTION = env.bool("GRAPHQL_INTROSPECTION", default=DEBUG)

# How long a response is replayed for a POST retried with the same Idempotency-Key.
IDEMPOTENCY_TTL_SECONDS = env.int("IDEMPOTENCY_TTL_SECONDS", default=24 * 60 * 60)

# --- Webhooks (docs/webhooks.md) -----------------------------------------------------------------
# The Celery queue of every webhook task; workers must consume it (`-Q celery,webhooks`).
WEBHOOKS_QUEUE = env.str("WEBHOOKS_QUEUE", default="webhooks")
# Tests and local development only: allows targets on loopback, private and link-local addresses,
# and plain http. Never in production: it opens the internal network to tenants' URLs.
WEBHOOKS_ALLOW_PRIVATE_TARGETS = env.bool("WEBHOOKS_ALLOW_PRIVATE_TARGETS", default=False)
WEBHOOK_CONNECT_TIMEOUT = env.float("WEBHOOK_CONNECT_TIMEOUT", default=5.0)
WEBHOOK_READ_TIMEOUT = env.float("WEBHOOK_READ_TIMEOUT", default=10.0)
# Attempts per delivery before it is dead; retries wait at most base * 2^(n-1) seconds, capped,
# with full jitter.
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=8)
WEBHOOK_RETRY_BASE_DELAY = env.float("WEBHOOK_RETRY_BASE_DELAY", default=30.0)
WEBHOOK_RETRY_MAX_DELAY = env.float("WEBHOOK_RETRY_MAX_DELAY", default=30 * 60.0)
# The circuit breaker of each endpoint: opens after this many consecutive failures, and lets one
# probe through after the reset period.
WEBHOOK_BREAKER_FAILURE_THRESHOLD = env.int("WEBHOOK_BREAKER_FAILURE_THRESHOLD", default=5)
WEBHOOK_BREAKER_RESET_SECONDS = env.float("WEBHOOK_BREAKER_RESET_SECONDS", default=60.0)

# --- HTTP limits, CORS ------------------------------------------------------------------------
# Bodies over this are refused with 413 before any view runs.
MAX_REQUEST_BODY_BYTES = env.int("MAX_REQUEST_BODY_BYTES", default=1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES
# The few routes allowed a body larger than that, by exact path, each with its own limit. The
# import's upload is a multipart body: its file plus a little for the envelope (boundaries and
# part headers); the view then holds the file itself to CATALOG_IMPORT_MAX_BYTES.
MAX_REQUEST_BODY_BYTES_BY_PATH = {
    "/api/v1/products/import/": CATALOG_IMPORT_MAX_BYTES + 64 * 1024,
}
# How many reverse proxies of ours stand in front of the app; 0 ignores X-Forwarded-For.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_URLS_REGEX = r"^/api/.*$"

# --- Rate limits ------------------------------------------------------------------------------
# Token buckets in Redis (kernel/ratelimit/; docs/rate-limits.md explains each one). A rate is
# "N/period" (period: s, m, h or d): a bucket of N requests that refills at N per period. Parsed
# here, so that a typo stops start-up.


def _rate(value: str) -> tuple[int, int]:
    requests, _, period = value.partition("/")
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(period.strip().lower()[:1])
    if not requests.strip().isdigit() or int(requests) < 1 or seconds is None:
        raise ValueError(f"A rate is N/s, N/m, N/h or N/d with N >= 1, not {value!r}.")
    return int(requests), seconds


# Without Redis (the embedded default) there is nowhere to keep shared counts: off unless asked.
RATELIMIT_ENABLED = env.bool("RATELIMIT_ENABLED", default=bool(REDIS_URL))
# Raw Redis keys, outside the cache's key function: this names them all.
RATELIMIT_KEY_PREFIX = env.str("RATELIMIT_KEY_PREFIX", default="tenantapi:rl")
# Each credential (user or API key) may use this share of its tenant's burst and rate.
RATELIMIT_CREDENTIAL_SHARE = env.float("RATELIMIT_CREDENTIAL_SHARE", default=0.5)
# Per client address: requests with no valid tenant credential, and anything else under /api/.
RATELIMIT_ANONYMOUS_RATE = _rate(env.str("RATELIMIT_ANONYMOUS_RATE", default="60/m"))
# Per client address, across sign-in, signup, refresh, logout and password reset.
RATELIMIT_AUTH_RATE = _rate(env.str("RATELIMIT_AUTH_RATE", default="30/m"))
RATELIMIT_SIGNUP_RATE = _rate(env.str("RATELIMIT_SIGNUP_RATE", default="10/h"))  # per address
# Per email: one address per attempt does not make asking about one email any faster.
RATELIMIT_SIGNUP_ACCOUNT_RATE = _rate(env.str("RATELIMIT_SIGNUP_ACCOUNT_RATE", default="5/h"))
RATELIMIT_REFRESH_RATE = _rate(env.str("RATELIMIT_REFRESH_RATE", default="30/m"))  # per user
RATELIMIT_PASSWORD_RESET_RATE = _rate(  # per account (email)
    env.str("RATELIMIT_PASSWORD_RESET_RATE", default="5/h")
)
# Redis unreachable: reads are served unlimited; writes too unless this is false (then 503).
RATELIMIT_FAIL_OPEN_WRITES = env.bool("RATELIMIT_FAIL_OPEN_WRITES", default=True)
# After a Redis failure, requests go unchecked this long before Redis is tried again.
RATELIMIT_BACKEND_RETRY_SECONDS = env.float("RATELIMIT_BACKEND_RETRY_SECONDS", default=5.0)
# Cached reads take their tokens in leases, a few at a time per process
# (kernel/ratelimit/leases.py): at most this many tokens a lease (1: every cached read asks
# Redis), spent within this many seconds.
RATELIMIT_LEASE_MAX_TOKENS = env.int("RATELIMIT_LEASE_MAX_TOKENS", default=64)
RATELIMIT_LEASE_SECONDS = env.float("RATELIMIT_LEASE_SECONDS", default=1.0)
# Failed sign-ins: this many for one (address, account) pair within the window lock the pair out
# for LOGIN_LOCKOUT_SECONDS, even with the right password; coarser limits per address across
# accounts (credential stuffing) and per account across addresses lock those out too.
LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=10)
LOGIN_FAILURE_WINDOW_SECONDS = env.int("LOGIN_FAILURE_WINDOW_SECONDS", default=15 * 60)
LOGIN_LOCKOUT_SECONDS = env.int("LOGIN_LOCKOUT_SECONDS", default=15 * 60)
LOGIN_ADDRESS_FAILURE_LIMIT = env.int("LOGIN_ADDRESS_FAILURE_LIMIT", default=100)
LOGIN_ACCOUNT_FAILURE_LIMIT = env.int("LOGIN_ACCOUNT_FAILURE_LIMIT", default=50)
# An (address, account) pair that signed in within this many days is not held to the account's
# window: a stranger's failures cannot lock the owner out from where they sign in
# (kernel/ratelimit/sign_ins.py).
LOGIN_KNOWN_PAIR_DAYS = env.int("LOGIN_KNOWN_PAIR_DAYS", default=30)
# DRF views that limit nothing themselves (the schema, accepting an invitation) take from the
# address's anonymous bucket; tenant views and the public auth views set their own.
REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = ["kernel.ratelimit.AnonymousAddressThrottle"]
SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"].append("kernel.ratelimit.add_rate_limit_headers")
# Browsers let scripts read only the response headers listed here.
CORS_EXPOSE_HEADERS = ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After"]
# ...and the trace a response belongs to (W3C Trace Context level 2, kernel/tracing.py).
CORS_EXPOSE_HEADERS.append("traceresponse")

# --- Observability ------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="json")  # json | console
SLOW_QUERY_MS = env.int("SLOW_QUERY_MS", default=100)
# A request slower than this logs a `slow_request` warning with its route and trace id.
SLOW_REQUEST_MS = env.int("SLOW_REQUEST_MS", default=1000)
# Who may read /metrics besides loopback: addresses or CIDR networks. Parsed here so that a typo
# stops start-up instead of turning every scrape into an error.
METRICS_ALLOWED_IPS = [
    str(ipaddress.ip_network(entry, strict=False))
    for entry in env.list("METRICS_ALLOWED_IPS", default=[])
]
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# A Celery worker serves its metrics on this port (0: it does not), on this address, under the
# same rule as /metrics; it needs PROMETHEUS_MULTIPROC_DIR (docs/operations.md).
WORKER_METRICS_PORT = env.int("WORKER_METRICS_PORT", default=0)
WORKER_METRICS_ADDRESS = env.str("WORKER_METRICS_ADDRESS", default="0.0.0.0")  # noqa: S104
if WORKER_METRICS_PORT and not env.str("PROMETHEUS_MULTIPROC_DIR", default=""):
    raise ImproperlyConfigured(
        "WORKER_METRICS_PORT needs PROMETHEUS_MULTIPROC_DIR: a worker's pool processes record "
        "the metrics, and its main process serves their sum."
    )
PROMETHEUS_METRIC_NAMESPACE = "tenantapi"
# The broker queues whose depth and oldest message's age /metrics reports (kernel/queues.py).
METRICS_QUEUES = env.list("METRICS_QUEUES", default=[CELERY_TASK_DEFAULT_QUEUE, WEBHOOKS_QUEUE])
# Seconds each /readyz check may take; a probe answers in about this time even if a service hangs.
READINESS_CHECK_TIMEOUT = env.float("READINESS_CHECK_TIMEOUT", default=2.0)
# A process runs /readyz's checks at most once in this many seconds; probes in between get the
# last results. 0 runs them on every probe.
READINESS_CACHE_SECONDS = env.float("READINESS_CACHE_SECONDS", default=1.0)

# --- Internationalisation, static files ---------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = env.str("STATIC_ROOT", default=str(VAR_DIR / "static"))
# Serve the admin's static files from the application itself (Django's static files handler).
# Right for the embedded run and small deployments; a CDN or proxy serves them at scale.
SERVE_STATIC = env.bool("SERVE_STATIC", default=True)
# Whether the ASGI server (the WebSocket server) also serves the HTTP API. True in the embedded
# default and a single-process deployment; production serves the API from gunicorn, and its ASGI
# server answers only its probes over HTTP (kernel/asgi.py).
ASGI_SERVE_HTTP = env.bool("ASGI_SERVE_HTTP", default=True)
# The largest WebSocket message the notifications socket reads, and the largest before the
# socket has authenticated (the client's first messages are small: an `auth` with a token).
WEBSOCKET_MAX_MESSAGE_BYTES = env.int("WEBSOCKET_MAX_MESSAGE_BYTES", default=65_536)
WEBSOCKET_UNAUTHENTICATED_MAX_BYTES = env.int("WEBSOCKET_UNAUTHENTICATED_MAX_BYTES", default=4_096)

# --- Data exports (kernel/exports/, docs/data.md) ------------------------------------------------
# Archives of a tenant's data and of a person's own are written through Django's storage API, to
# the `exports` storage: the filesystem under EXPORTS_ROOT by default; S3 in production, with
# EXPORTS_STORAGE_BACKEND=storages.backends.s3.S3Storage, the bucket in EXPORTS_S3_BUCKET and the
# credentials from boto3's own chain (AWS_ACCESS_KEY_ID…, an instance role). Never served as
# static or media files: the signed link of a job is the only way to one.
EXPORTS_STORAGE_BACKEND = env.str(
    "EXPORTS_STORAGE_BACKEND", default="django.core.files.storage.FileSystemStorage"
)
EXPORTS_ROOT = env.str("EXPORTS_ROOT", default=str(VAR_DIR / "exports"))
# django-storages' S3Storage options (docs/operations.md, "Data exports: storage"). No credential
# here: boto3 finds them itself, and none is ever a setting.
EXPORTS_S3_OPTIONS = {
    "bucket_name": env.str("EXPORTS_S3_BUCKET", default="tenantapi-exports"),
    "location": env.str("EXPORTS_S3_PREFIX", default="exports"),
    "endpoint_url": env.str("EXPORTS_S3_ENDPOINT_URL", default="") or None,
    "region_name": env.str("EXPORTS_S3_REGION", default="") or None,
    # "path" for MinIO and most S3-compatible servers; empty: boto3 chooses (virtual hosts on AWS).
    "addressing_style": env.str("EXPORTS_S3_ADDRESSING_STYLE", default="") or None,
    # No ACL on the PUT: buckets have ACLs disabled by default ("bucket owner enforced") and
    # refuse a PUT naming one; objects are private to the bucket's account without it.
    "default_acl": None,
    # Each name is its job's own; overwriting spares a HEAD before every save, which answers 403
    # rather than 404 to a role without s3:ListBucket and would fail the export.
    "file_overwrite": True,
    # Already gzip: stored as such, without the `Content-Encoding: gzip` guessed from ".tar.gz"
    # (which would have HTTP clients unpack it).
    "object_parameters": {"ContentType": "application/gzip"},
    # url() is never used (the signed link of a job is), and could only give a presigned URL.
    "querystring_auth": True,
    # Reading an archive copies the whole object first; past 5 MiB into a temporary file rather
    # than memory (the default, 0, keeps all of it in memory).
    "max_memory_size": 5 * 1024 * 1024,
}
if EXPORTS_STORAGE_BACKEND == "storages.backends.s3.S3Storage":
    _EXPORTS_OPTIONS = EXPORTS_S3_OPTIONS
else:
    _EXPORTS_OPTIONS = {"location": EXPORTS_ROOT, "file_permissions_mode": 0o600}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "exports": {"BACKEND": EXPORTS_STORAGE_BACKEND, "OPTIONS": _EXPORTS_OPTIONS},
}
# How long an export's download link works; its archive is deleted after (beat).
EXPORT_LINK_TTL_SECONDS = env.int("EXPORT_LINK_TTL_SECONDS", default=24 * 60 * 60)

# Where a password-reset email points: the client application's page, given uid and token.
PASSWORD_RESET_URL = env.str(
    "PASSWORD_RESET_URL", default="http://localhost:8000/reset-password?uid={uid}&token={token}"
)
PASSWORD_RESET_TIMEOUT = env.int("PASSWORD_RESET_TIMEOUT", default=60 * 60)
# Invitations to join a tenant: how long they stay valid, and where their email points.
INVITATION_TTL_DAYS = env.int("INVITATION_TTL_DAYS", default=7)
INVITATION_ACCEPT_URL = env.str(
    "INVITATION_ACCEPT_URL", default="http://localhost:8000/accept-invitation?token={token}"
)
# The platform audit log's events older than this many days are deleted by the hourly beat job;
# tenants' logs are kept as long as their plans say (docs/audit.md, "Retention").
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", default=365)
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="no-reply@localhost")

from config.settings.logging import build_logging  # noqa: E402

LOGGING = build_logging(level=LOG_LEVEL, fmt=LOG_FORMAT)
