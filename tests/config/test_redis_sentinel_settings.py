"""What REDIS_SENTINELS and its companions turn into (config/settings/sentinel.py); the failover
itself is drilled against real sentinels in tests/scale/test_redis_sentinel.py."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.settings.sentinel import (
    celery_result_backend_options,
    channel_layer_host,
    sentinel_addresses,
    sentinel_location,
)


def test_the_sentinels_are_host_port_pairs():
    assert sentinel_addresses("") == []
    assert sentinel_addresses(" a.example:26379, 10.0.0.2:26380 ,[::1]:26381") == [
        ("a.example", 26379),
        ("10.0.0.2", 26380),
        ("::1", 26381),
    ]
    for wrong in ("a.example", "a.example:port", ":26379"):
        with pytest.raises(ImproperlyConfigured, match="host:port"):
            sentinel_addresses(wrong)


def test_redis_url_gives_the_credentials_and_database_and_the_service_replaces_its_host():
    assert sentinel_location("", "tenantapi") == "redis://tenantapi/0"
    assert sentinel_location("redis://old-host:6379/4", "tenantapi") == "redis://tenantapi/4"
    assert (
        sentinel_location("redis://app:p%40ss@old-host/2", "tenantapi")
        == "redis://app:p%40ss@tenantapi/2"
    )
    assert sentinel_location("redis://:secret@x/1", "cache-1") == "redis://:secret@cache-1/1"


@pytest.mark.parametrize(
    ("url", "service", "problem"),
    [
        # django-redis reads the service from the URL's host, which comes back lower-cased.
        ("", "TenantAPI", "lower-case"),
        ("", "a/b", "lower-case"),
        ("", "", "lower-case"),
        ("rediss://:secret@x/0", "tenantapi", "TLS"),
        ("redis://x/zero", "tenantapi", "database number"),
    ],
)
def test_what_cannot_name_the_service_is_refused_at_start_up(url, service, problem):
    with pytest.raises(ImproperlyConfigured, match=problem):
        sentinel_location(url, service)


def test_the_channel_layer_finds_the_primary_with_redis_urls_credentials():
    host = channel_layer_host(
        "redis://app:p%40ss@tenantapi/3",
        "tenantapi",
        [("10.0.0.1", 26379)],
        "sentinel-secret",
        socket_timeout=15,
    )

    assert host == {
        "sentinels": [("10.0.0.1", 26379)],
        "master_name": "tenantapi",
        "sentinel_kwargs": {
            "socket_timeout": 2,
            "socket_connect_timeout": 2,
            "password": "sentinel-secret",
        },
        "db": 3,
        "username": "app",
        "password": "p@ss",
        "socket_timeout": 15,
    }


def test_a_sentinel_result_backend_is_told_the_service_and_other_backends_nothing():
    assert celery_result_backend_options("sentinel://10.0.0.1:26379/3", "tenantapi", "") == {
        "master_name": "tenantapi",
        "sentinel_kwargs": {"socket_timeout": 1, "socket_connect_timeout": 1},
    }
    assert celery_result_backend_options("redis://10.0.0.1:6379/3", "tenantapi", "") == {}
    assert celery_result_backend_options("", "tenantapi", "") == {}
