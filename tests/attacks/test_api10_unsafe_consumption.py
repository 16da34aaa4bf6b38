"""OWASP API10:2023, unsafe consumption of APIs: the answers of webhook receivers.

A receiver is a third party's server, and its answer is input we did not ask for. This module
proves, against receivers on a raw socket that answer exactly the bytes a test gives them, that
only the status code of the answer counts: a 500 whose JSON body claims success is a failure; a
redirect of any kind is a failure and is never followed; a body announced as a gigabyte, or one
that never ends, is not read, so the attempt finishes at once; a header block too large is a
failure, not a crash; and nothing the receiver wrote (body, headers, cookies) is stored in the
delivery or shown by the API.

The source review's case of the other direction, what we hand to someone else's software (a
spreadsheet opening our CSV export), is finding 11 of docs/security.md, in
tests/catalog/test_catalog_export.py.
"""

import socket
import threading
import time

import pytest

from kernel.context import tenant_context
from tests.attacks.support import Tenancy, tenancy
from tests.helpers import API, outcome
from tests.notifications.test_webhooks_api import event_for
from tests.notifications.test_webhooks_delivery import attempt
from webhooks import services
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db

Status = WebhookDelivery.Status
MARKER = "receiver-says-e7c1"


class RawReceiver:
    """An HTTP server that answers every request with the same raw bytes, then keeps the
    connection open for `hold` seconds (to play a body that never ends)."""

    def __init__(self, answer: bytes, *, hold: float = 0.0) -> None:
        self.answer = answer
        self.hold = hold
        self.paths: list[str] = []
        self._closing = threading.Event()
        self._socket = socket.create_server(("127.0.0.1", 0))
        # So that the accepting thread notices the end of the test at once.
        self._socket.settimeout(0.05)
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def __enter__(self) -> "RawReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        self._socket.close()

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with connection:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    request += chunk
                self.paths.append(request.split(b" ", 2)[1].decode() if request else "")
                try:
                    connection.sendall(self.answer)
                except OSError:
                    continue
                self._closing.wait(self.hold)


def http_answer(status: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


@pytest.fixture(autouse=True)
def _loopback_targets(settings):
    # The receivers of this module are on 127.0.0.1.
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = True


@pytest.fixture
def own() -> Tenancy:
    return tenancy("Consumer")


def deliver_to(own: Tenancy, receiver: RawReceiver) -> tuple[str, WebhookDelivery, float]:
    with tenant_context(own.tenant.id):
        services.webhook_endpoint_create(url=f"{receiver.url}/hook", topics=["*"])
        (delivery,) = services.webhook_deliveries_create_for_event(event=event_for(own.tenant))
    started = time.monotonic()
    result = attempt(own.tenant, delivery)
    elapsed = time.monotonic() - started
    with outcome():
        row = WebhookDelivery.objects.get(pk=delivery.pk)
    return result.status, row, elapsed


def assert_nothing_of_the_receiver_kept(own: Tenancy, row: WebhookDelivery) -> None:
    with outcome():
        values = WebhookDelivery.objects.filter(pk=row.pk).values().get()
    stored = " ".join(str(value) for value in values.values())
    shown = own.client.get(f"{API}/webhooks/{row.endpoint_id}/deliveries/").content.decode()
    assert MARKER not in stored
    assert MARKER not in shown


def test_a_500_claiming_success_is_a_failure(own):
    body = f'{{"status": "success", "delivered": true, "note": "{MARKER}"}}'.encode()
    answer = http_answer(
        "500 Internal Server Error",
        {
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "X-Webhook-Status": "delivered",
            "Set-Cookie": f"session={MARKER}",
        },
        body,
    )
    with RawReceiver(answer) as receiver:
        status, row, _ = deliver_to(own, receiver)

    assert status == Status.FAILED
    assert (row.last_status_code, row.last_error) == (500, "HTTP 500.")
    assert row.delivered_at is None
    assert_nothing_of_the_receiver_kept(own, row)


@pytest.mark.parametrize(
    "code", ["301 Moved Permanently", "303 See Other", "308 Permanent Redirect"]
)
def test_a_redirect_of_any_kind_is_a_failure_and_not_followed(own, code):
    answer = http_answer(code, {"Location": "/elsewhere", "Content-Length": "0"})
    with RawReceiver(answer) as receiver:
        status, row, _ = deliver_to(own, receiver)
        paths = list(receiver.paths)

    assert status == Status.FAILED
    assert paths == ["/hook"]
    assert row.last_error.startswith("Redirect not followed")


def test_a_body_announced_as_a_gigabyte_is_not_read(own, settings):
    # Given a receiver that announces a gigabyte, sends 64 KiB of it, and then stalls
    settings.WEBHOOK_READ_TIMEOUT = 5
    answer = http_answer(
        "200 OK", {"Content-Length": str(1 << 30)}, (MARKER.encode() + b"x" * 1024) * 64
    )
    with RawReceiver(answer, hold=10) as receiver:
        status, row, elapsed = deliver_to(own, receiver)

    # Then the 200 is all that counts, and the attempt does not wait for the rest
    assert status == Status.SUCCEEDED
    assert elapsed < 2
    assert_nothing_of_the_receiver_kept(own, row)


def test_a_body_that_never_ends_is_not_read(own, settings):
    settings.WEBHOOK_READ_TIMEOUT = 5
    chunk = f"{len(MARKER):x}\r\n{MARKER}\r\n".encode()
    answer = http_answer("202 Accepted", {"Transfer-Encoding": "chunked"}, chunk * 1000)
    with RawReceiver(answer, hold=10) as receiver:
        status, row, elapsed = deliver_to(own, receiver)

    assert status == Status.SUCCEEDED
    assert elapsed < 2
    assert_nothing_of_the_receiver_kept(own, row)


def test_a_header_block_too_large_is_a_failure_not_a_crash(own):
    answer = http_answer("200 OK", {"X-Filler": MARKER * 20_000, "Content-Length": "0"})
    with RawReceiver(answer) as receiver:
        status, row, _ = deliver_to(own, receiver)

    assert status == Status.FAILED
    assert row.delivered_at is None
    assert_nothing_of_the_receiver_kept(own, row)
