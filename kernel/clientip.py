"""The client's address, trusting `X-Forwarded-For` only as far as the deployment says.

With `TRUSTED_PROXY_COUNT = N` (N proxies we run stand in front, each appending the address it
saw), the client is the Nth address from the right of `X-Forwarded-For`; anything further left
was written by the client and proves nothing. With 0 (the default) the header is ignored and the
socket's address is the client's.
"""

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    remote = request.META.get("REMOTE_ADDR", "")
    hops = settings.TRUSTED_PROXY_COUNT
    if hops <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [part for part in forwarded if part]
    if len(forwarded) < hops:
        # Fewer hops than configured: the request did not come through our proxies.
        return remote
    candidate = forwarded[-hops]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote
