"""Connections our servers make for a tenant (kernel/outbound.py), through `requests` as the
identity-provider client makes them: to the address that was checked, never to one resolved a
second time, with TLS verified for the name as written, and redirects checked again.

A real HTTPS server on loopback stands in for a provider at `idp.test`; the test's resolver says
where `idp.test` is, as DNS would.
"""

import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kernel import outbound


class Seen:
    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.server_names: list[str | None] = []


def certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for `name` and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def https_server(
    cert: Path, key: Path, seen: Seen, *, redirect_to: str = ""
) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.hosts.append(self.headers.get("Host", ""))
            if redirect_to:
                self.send_response(302)
                self.send_header("Location", redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: seen.server_names.append(name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


@pytest.fixture
def served() -> Iterator[list[ThreadingHTTPServer]]:
    servers: list[ThreadingHTTPServer] = []
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def serve(servers: list, server: ThreadingHTTPServer) -> int:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    servers.append(server)
    return server.server_address[1]


@pytest.fixture
def resolver(monkeypatch) -> dict[str, list[str]]:
    """Where names point, for this test: `idp.test` and any other it sets."""
    answers: dict[str, list[str]] = {}

    def resolve(host: str, port: int):
        return tuple(ipaddress.ip_address(address) for address in answers.get(host, ()))

    monkeypatch.setattr(outbound, "resolve_host", resolve)
    return answers


def session(check) -> requests.Session:
    client = requests.Session()
    client.trust_env = False
    adapter = outbound.CheckedAddressAdapter(check)
    client.mount("https://", adapter)
    client.mount("http://", adapter)
    return client


def loopback_allowed(url: str) -> outbound.Target:
    return outbound.resolve_target(url, allow_private=True)


def test_the_connection_goes_to_the_checked_address_with_tls_for_the_name(
    tmp_path, served, resolver
):
    cert, key = certificate(tmp_path, "idp.test")
    seen = Seen()
    port = serve(served, https_server(cert, key, seen))
    resolver["idp.test"] = ["127.0.0.1"]

    answer = session(loopback_allowed).get(f"https://idp.test:{port}/jwks", verify=str(cert))

    assert answer.json() == {"ok": True}
    assert seen.hosts == [f"idp.test:{port}"]
    assert seen.server_names == ["idp.test"]


def test_a_certificate_for_another_name_is_refused(tmp_path, served, resolver):
    cert, key = certificate(tmp_path, "other.test")
    seen = Seen()
    port = serve(served, https_server(cert, key, seen))
    resolver["idp.test"] = ["127.0.0.1"]

    with pytest.raises(requests.exceptions.SSLError):
        session(loopback_allowed).get(f"https://idp.test:{port}/jwks", verify=str(cert))
    assert seen.hosts == []


def test_a_name_that_resolves_to_our_network_is_never_connected_to(tmp_path, served, resolver):
    cert, key = certificate(tmp_path, "idp.test")
    seen = Seen()
    port = serve(served, https_server(cert, key, seen))
    resolver["idp.test"] = ["127.0.0.1"]

    with pytest.raises(outbound.UnsafeTarget):
        session(outbound.resolve_target).get(f"https://idp.test:{port}/jwks", verify=str(cert))
    assert seen.hosts == []


def test_a_redirect_is_checked_again(tmp_path, served, resolver):
    """A public provider that redirects into our network gets no request through."""
    cert, key = certificate(tmp_path, "idp.test")
    inside = Seen()
    inside_port = serve(served, https_server(cert, key, inside))
    outside = Seen()
    outside_port = serve(
        served,
        https_server(cert, key, outside, redirect_to=f"https://10.1.2.3:{inside_port}/secrets"),
    )
    resolver["idp.test"] = ["127.0.0.1"]

    def only_idp_test(url: str) -> outbound.Target:
        target = outbound.resolve_target(url, allow_private=True)
        if target.host != "idp.test":
            raise outbound.UnsafeTarget(outbound.NOT_PUBLIC)
        return target

    with pytest.raises(outbound.UnsafeTarget):
        session(only_idp_test).get(f"https://idp.test:{outside_port}/", verify=str(cert))
    assert outside.hosts == [f"idp.test:{outside_port}"]
    assert inside.hosts == []
