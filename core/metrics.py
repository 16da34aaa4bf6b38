"""Who may read /metrics, and the gunicorn hooks of prometheus_client's multiprocess mode.

django-prometheus does the measuring (request latency by view, responses by status, database and
cache backends, cache hits and misses) and core.health serves its exporter. Metrics reveal
traffic, views and error rates, so they are not public: loopback, the addresses and networks in
METRICS_ALLOWED_IPS, or a bearer METRICS_TOKEN.

The two gunicorn server hooks at the end, `on_starting` and `child_exit`, are what multiprocess
mode needs under gunicorn; its config file imports them (docs/operations.md). This module also
works as a config of its own, `gunicorn -c python:core.metrics`, since gunicorn reads only the
names it knows.
"""

import hmac
import ipaddress
import os
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest
from prometheus_client import multiprocess

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _client_address(request: HttpRequest) -> IPAddress | None:
    # REMOTE_ADDR is the peer of the socket; trusting proxy headers is a separate, later decision.
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; judge them as the IPv4 address.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _has_metrics_token(request: HttpRequest) -> bool:
    expected = settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer":
        return False
    # Constant time, so that response timing does not reveal how much of a guess was right.
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def client_may_read_metrics(request: HttpRequest) -> bool:
    address = _client_address(request)
    if address is not None:
        if address.is_loopback:
            return True
        for entry in settings.METRICS_ALLOWED_IPS:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
    return _has_metrics_token(request)


# --- gunicorn server hooks (multiprocess mode) ---------------------------------------------------
# Under gunicorn each worker is a process with its own counters, and a scrape reaches only one of
# them. With PROMETHEUS_MULTIPROC_DIR set, prometheus_client writes every worker's values to files
# in that directory and the exporter sums them.


def _multiprocess_dir() -> Path | None:
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def on_starting(server: object) -> None:
    """Drop the previous run's values, so that counters restart with the server."""
    directory = _multiprocess_dir()
    if directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    # Only prometheus_client's own files, in case the directory was pointed somewhere shared.
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)


def child_exit(server: object, worker: object) -> None:
    """Let the live gauges of a worker that exited stop counting."""
    if _multiprocess_dir() is not None:
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
