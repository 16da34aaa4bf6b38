"""Which hosts our servers may connect to for a tenant: a defence against server-side request
forgery.

A tenant chooses a URL (a webhook's target, its identity provider's issuer) and our processes make
the request, from inside our network. So a host is refused unless every address it resolves to is
a public unicast address: not loopback, private, shared (CGNAT), link-local, multicast, reserved,
unspecified or a cloud metadata address, and not an IPv6 form that embeds such an IPv4 address
(::ffff:127.0.0.1, 6to4, Teredo, NAT64). Host names are resolved with the system resolver, which
also reads the odd IPv4 spellings (`2130706433`, `0x7f.1`, `127.1`) as the addresses they are, so
those are judged by their address too.

A URL is checked when it is saved, and again before every connection, because DNS can change in
between (rebinding); the connection then goes to the very address that was checked
(`Target.addresses`, or `CheckedAddressAdapter` for a `requests` session), never resolving the name
a second time.

`allow_private=True` (each feature's own setting, for tests and local development only) lifts the
address rules and allows plain http; names are still resolved once and connected to by address.
"""

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import requests
from requests.adapters import HTTPAdapter

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance metadata services. Most are link-local or private anyway; they are named so
# that the reason given is the real one.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
# Ranges that Python's `is_global` still counts as global on the versions we run on, and that
# are no receiver on the internet: the deprecated site-local prefix (RFC 3879), which old stacks
# still route inside a site, and the IPv6 documentation prefix of RFC 9637.
NOT_GLOBAL_NETWORKS = (
    (ipaddress.ip_network("fec0::/10"), "a site-local address"),
    (ipaddress.ip_network("3fff::/20"), "a documentation address"),
)
# A DNS name, or what the resolver may read as an IPv4 address. Anything else (spaces,
# percent-escapes, a Unicode name httpx did not turn into xn--) is not a host we can judge.
_HOST_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$")


# One answer for a name that does not resolve and for one that resolves to an address we refuse,
# without the address: anything more precise would let a tenant map our internal DNS (which names
# exist in it, and where they point) through error messages. It names both causes, so that a
# mistyped host name is still the first thing a tenant checks.
NOT_PUBLIC = (
    "The URL's host does not resolve, or resolves to an address that is not public: "
    "it must resolve to public internet addresses only."
)


class UnsafeTarget(ValueError):
    """The URL may not be connected to. The message is for the client; `detail` is
    for our logs only (it may name an internal address)."""

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


@dataclass(frozen=True, slots=True)
class Target:
    url: httpx.URL
    # The checked addresses, in the resolver's order: connect to these and nothing else.
    addresses: tuple[IPAddress, ...]

    @property
    def host(self) -> str:
        return self.url.host

    @property
    def host_header(self) -> str:
        """What `Host` would be for the URL as written (with a port only if not the default)."""
        host = f"[{self.url.host}]" if ":" in self.url.host else self.url.host
        return host if self.url.port is None else f"{host}:{self.url.port}"

    def url_for(self, address: IPAddress) -> httpx.URL:
        return self.url.copy_with(host=str(address))


def parse_url(url: str, *, allow_private: bool = False) -> httpx.URL:
    """The URL, parsed by the same parser the client sends with; UnsafeTarget if refused."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise UnsafeTarget("Enter a valid URL.") from exc
    if parsed.scheme not in ("http", "https"):
        raise UnsafeTarget("Only http and https URLs are allowed.")
    if parsed.scheme == "http" and not allow_private:
        raise UnsafeTarget("Use an https URL.")
    if not parsed.host:
        raise UnsafeTarget("The URL has no host.")
    # A URL with credentials is also the classic way to disguise the real host
    # (`https://trusted.example@10.0.0.1/`); receivers authenticate us by the signature.
    if parsed.userinfo:
        raise UnsafeTarget("The URL may not contain a user name or password.")
    if _ip_literal(parsed.host) is None and not _HOST_NAME.match(parsed.host):
        raise UnsafeTarget("The URL's host is not a valid host name.")
    if not allow_private and _is_localhost_name(parsed.host):
        raise UnsafeTarget("The URL's host is a local name.")
    return parsed


def resolve_target(url: str, *, allow_private: bool = False) -> Target:
    """Parse, resolve and check the URL: what a connection may go to, or UnsafeTarget."""
    parsed = parse_url(url, allow_private=allow_private)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    literal = _ip_literal(parsed.host)
    addresses = (literal,) if literal is not None else resolve_host(parsed.host, port)
    if not addresses:
        raise UnsafeTarget(NOT_PUBLIC, detail=f"{parsed.host} does not resolve")
    if not allow_private:
        for address in addresses:
            reason = refusal_reason(address)
            if reason is not None:
                raise UnsafeTarget(NOT_PUBLIC, detail=f"{parsed.host} resolves to {reason}")
    return Target(url=parsed, addresses=addresses)


def check_url(url: str, *, allow_private: bool = False) -> None:
    """For a URL being saved: refuse what a connection to it would refuse."""
    if allow_private:
        # Nothing to judge an address by: only the URL's shape, so that a name that only
        # resolves where the worker runs (docker compose, a test) can be saved.
        parse_url(url, allow_private=True)
    else:
        resolve_target(url, allow_private=False)


def resolve_host(host: str, port: int) -> tuple[IPAddress, ...]:
    """Every address the system resolver gives for the name, in its order, without repeats."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return ()
    addresses: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        # An IPv6 link-local answer carries its zone ("fe80::1%eth0"); the address is what counts.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return tuple(addresses)


def refusal_reason(address: IPAddress) -> str | None:
    """Why this address may not be connected to; None if it may."""
    for candidate in (address, *_embedded_ipv4(address)):
        if candidate in METADATA_ADDRESSES:
            return "a cloud metadata address"
        if candidate.is_loopback:
            return "a loopback address"
        if candidate.is_unspecified:
            return "an unspecified address"
        if candidate.is_link_local:
            return "a link-local address"
        if candidate.is_multicast:
            return "a multicast address"
        if candidate.is_private:
            return "a private address"
        if candidate.is_reserved:
            return "a reserved address"
        for network, reason in NOT_GLOBAL_NETWORKS:
            if candidate.version == network.version and candidate in network:
                return reason
        # What is left and still not global: shared address space (100.64.0.0/10), benchmark
        # and documentation ranges and the like, none of them a receiver on the internet.
        if not candidate.is_global:
            return "an address that is not publicly routable"
    return None


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address stands for, which a network may route to."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    embedded = [address.ipv4_mapped, address.sixtofour]
    if address.teredo is not None:
        embedded.append(address.teredo[1])
    if address in NAT64_PREFIX:
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [candidate for candidate in embedded if candidate is not None]


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _is_localhost_name(host: str) -> bool:
    # RFC 6761: `localhost` and every name under it are the local machine, whatever DNS says.
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


class CheckedAddressAdapter(HTTPAdapter):
    """A `requests` transport that connects only where `check(url)` allows: the URL of every
    request it sends (a redirect's too) is resolved and checked, and the connection goes to the
    first checked address, with TLS verified for the name as written (SNI and certificate).
    Proxies are never used: a proxy would resolve the name itself and undo the check."""

    def __init__(self, check: Callable[[str], Target], **kwargs) -> None:
        self._check = check
        super().__init__(**kwargs)

    def send(self, request: requests.PreparedRequest, **kwargs) -> requests.Response:
        target = self._check(request.url or "")
        request.headers["Host"] = target.host_header
        request.checked_target = target  # type: ignore[attr-defined]  (read just below)
        return super().send(request, **{**kwargs, "proxies": {}})

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        target: Target = request.checked_target
        host_params = {**host_params, "host": str(target.addresses[0])}
        if host_params["scheme"] == "https":
            pool_kwargs = {
                **pool_kwargs,
                "server_hostname": target.host,
                "assert_hostname": target.host,
            }
        return host_params, pool_kwargs
