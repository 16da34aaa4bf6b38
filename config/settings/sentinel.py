"""Redis behind Sentinel: what each Redis user is given when REDIS_SENTINELS is set.

Every user of Redis (the cache and what runs on its client: rate limits, tracked keys, the marks
of read-your-writes; the channel layer; the Celery result backend) asks the sentinels where the
primary is, instead of being given an address, and asks again when a connection to it fails or
the server it reaches has become a replica. docs/scale-out.md, "Redis with Sentinel", says what
each does during and after a failover.

REDIS_URL keeps what is not an address: the data nodes' credentials and the database number,
`redis://[[user]:password@]<anything>/<db>`; its host and port are not used. With Sentinel,
base.py replaces it with `redis://[credentials@]<service>/<db>`, the form django-redis' Sentinel
factory reads the service name from, so that the code that tells "Redis or not" by REDIS_URL
(the defaults of the rate limits and tracked keys, the test settings) reads it as before.

The service is always reached on its primary: django-redis' SentinelClient would send reads to a
replica, where a version bumped a moment ago on the primary may not have arrived yet, and the
tracked keys are kept exact by the primary's invalidations.
"""

from typing import Any
from urllib.parse import quote, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured


def sentinel_addresses(value: str) -> list[tuple[str, int]]:
    """REDIS_SENTINELS, `host:port,host:port,…`, as (host, port) pairs ([] when unset)."""
    addresses = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, _, port = item.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit():
            raise ImproperlyConfigured(
                f"REDIS_SENTINELS lists host:port pairs, comma-separated; not {item!r}."
            )
        addresses.append((host, int(port)))
    return addresses


def sentinel_location(redis_url: str, service: str) -> str:
    """The URL every Redis user is configured from: REDIS_URL's credentials and database, and
    the service name where the host would be."""
    # django-redis reads the service from the URL's host, which urllib lower-cases: a name in
    # upper case, or with a character a host cannot hold, would name another service.
    if not service or service != service.lower() or any(c in service for c in ":/@?#[] "):
        raise ImproperlyConfigured(
            f"REDIS_SENTINEL_MASTER must be a lower-case name without ':/@?#', not {service!r}."
        )
    parts = urlsplit(redis_url or "redis:///0")
    if parts.scheme != "redis":
        raise ImproperlyConfigured(
            "With REDIS_SENTINELS, REDIS_URL gives the credentials and database only, as "
            f"redis://[:password@]{service}/<db>; TLS (rediss://) is not supported through "
            "Sentinel."
        )
    credentials = ""
    if parts.username or parts.password:
        user = quote(unquote(parts.username or ""), safe="")
        password = quote(unquote(parts.password or ""), safe="")
        credentials = f"{user}:{password}@" if password else f"{user}@"
    return f"redis://{credentials}{service}/{_database(parts.path)}"


def _database(path: str) -> int:
    number = path.strip("/") or "0"
    if not number.isdigit():
        raise ImproperlyConfigured(f"REDIS_URL's path is a database number, not {path!r}.")
    return int(number)


def _credentials(location: str) -> dict[str, Any]:
    parts = urlsplit(location)
    found: dict[str, Any] = {"db": _database(parts.path)}
    if parts.username:
        found["username"] = unquote(parts.username)
    if parts.password:
        found["password"] = unquote(parts.password)
    return found


def _sentinel_kwargs(password: str, *, timeout: float) -> dict[str, Any]:
    """How the sentinels themselves are asked: bounded, so that a sentinel that hangs costs one
    timeout before the next one is asked; with their own password, if they have one."""
    kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if password:
        kwargs["password"] = password
    return kwargs


def cache_options(sentinels: list[tuple[str, int]], sentinel_password: str) -> dict[str, Any]:
    """The OPTIONS of a django-redis cache whose LOCATION is `[sentinel_location(…)]`: one
    server, the primary (a LOCATION string would give SentinelClient a replica for reads)."""
    return {
        "CLIENT_CLASS": "django_redis.client.SentinelClient",
        "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
        "SENTINELS": sentinels,
        "SENTINEL_KWARGS": _sentinel_kwargs(sentinel_password, timeout=1),
    }


def channel_layer_host(
    location: str,
    service: str,
    sentinels: list[tuple[str, int]],
    sentinel_password: str,
    **connection: Any,
) -> dict[str, Any]:
    """A channels-redis host entry that reaches the primary through the sentinels;
    `connection` holds the data connections' socket options."""
    return {
        "sentinels": sentinels,
        "master_name": service,
        "sentinel_kwargs": _sentinel_kwargs(sentinel_password, timeout=2),
        **_credentials(location),
        **connection,
    }


def celery_result_backend_options(url: str, service: str, sentinel_password: str) -> dict[str, Any]:
    """CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS for the backend at `url`: with a `sentinel://`
    one, the service it is to find the primary of. (The URL itself is given as it is: Celery
    reads the variable CELERY_RESULT_BACKEND from the environment before any setting.)"""
    if urlsplit(url or "").scheme != "sentinel":
        return {}
    return {
        "master_name": service,
        "sentinel_kwargs": _sentinel_kwargs(sentinel_password, timeout=1),
    }
