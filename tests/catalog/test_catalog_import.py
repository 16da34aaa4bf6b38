"""Bulk import of products through HTTP: the upload's checks, the job resource, upserts by SKU,
per-row errors, the plan's quota, events, query counts, and a run on a real Celery worker."""

import json
import time
import uuid
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework import serializers
from rest_framework.test import APIClient

from catalog import imports
from catalog.imports import worker as import_worker
from catalog.models import Product
from catalog.tasks import catalog_import_task
from kernel.context import tenant_context
from kernel.models import Job, JobFile
from kernel.tenancy.models import Plan
from tests.catalog_helpers import (
    PRODUCTS,
    client_without_catalog_read,
    editor_client,
    make_category,
    make_product,
    product_body,
    published_events,
    viewer_client,
)
from tests.factories import make_tenant
from tests.helpers import API, assert_problem, outcome, tasks_run_inline

IMPORT = f"{API}/products/import/"
JOBS = f"{API}/jobs/"
# The pro plan: its rate limits leave room for the many requests of one test.
pytestmark = [pytest.mark.django_db, pytest.mark.tenant(plan_code="pro")]

HEADER = "sku,name,description,price,currency,stock,is_active,category,tags,attributes"


def csv_file(text: str, name: str = "products.csv", content_type: str = "text/csv"):
    return SimpleUploadedFile(name, text.encode(), content_type=content_type)


def json_file(items, name: str = "products.json"):
    return SimpleUploadedFile(name, json.dumps(items).encode(), content_type="application/json")


def upload(client: APIClient, file):
    return client.post(IMPORT, {"file": file}, format="multipart")


@pytest.fixture
def run_import(django_capture_on_commit_callbacks):
    """Upload a file and let its job run to the end (inline, once the upload has committed);
    returns the job resource as a client then reads it."""

    def run(client: APIClient, file) -> dict:
        with tasks_run_inline(), django_capture_on_commit_callbacks(execute=True):
            response = upload(client, file)
        assert response.status_code == 202, response.content
        job = client.get(response["Location"])
        assert job.status_code == 200, job.content
        return job.json()

    return run


def products_by_sku(client: APIClient) -> dict[str, dict]:
    response = client.get(PRODUCTS, {"page_size": 100})
    assert response.status_code == 200, response.content
    return {product["sku"]: product for product in response.json()["results"]}


def skus_of(tenant) -> set[str]:
    with outcome():
        return set(Product.objects.filter(tenant=tenant).values_list("sku", flat=True))


def rows_and_fields(job: dict) -> list[tuple[int, str | None]]:
    return [(error["row"], error.get("field")) for error in job["errors"]]


# --- the happy paths --------------------------------------------------------------------------


def test_csv_import_answers_202_with_the_job_then_creates_the_products(
    tenant, editor, django_capture_on_commit_callbacks
):
    shoes = make_category(tenant, name="Shoes")
    hats = make_category(tenant, name="Hats")
    text = (
        f"{HEADER}\n"
        f'TEE-1,Café T-shirt ☕ 東京,"Soft, warm\nand blue",19.99,usd,3,true,{shoes.slug},'
        f'summer; cotton ;summer,"{{""color"": ""blue"", ""sizes"": [""S"", ""M""]}}"\n'
        f"HAT-1,Hat,,5,,0,false,{hats.id},,\n"
    )

    with tasks_run_inline(), django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = upload(editor, csv_file(text))

        # Accepted before anything ran: the task is queued for after the commit.
        assert response.status_code == 202, response.content
        accepted = response.json()
        assert accepted["status"] == "pending"
        assert accepted["kind"] == "products.import"
        assert accepted["total"] == 2
        assert (accepted["processed"], accepted["succeeded"], accepted["failed"]) == (0, 0, 0)
        assert response["Location"].endswith(f"/api/v1/jobs/{accepted['id']}/")
        assert len(callbacks) == 0  # not committed yet

    job = editor.get(response["Location"]).json()
    assert job["status"] == "succeeded"
    assert (job["total"], job["processed"], job["succeeded"], job["failed"]) == (2, 2, 2, 0)
    assert job["errors"] == []
    assert job["finished_at"] is not None

    products = products_by_sku(editor)
    tee = products["TEE-1"]
    assert tee["name"] == "Café T-shirt ☕ 東京"
    assert tee["description"] == "Soft, warm\nand blue"
    assert (tee["price"], tee["currency"], tee["stock"], tee["is_active"]) == (
        "19.99",
        "USD",
        3,
        True,
    )
    assert tee["category"] == str(shoes.id)
    assert tee["tags"] == ["summer", "cotton"]
    assert tee["attributes"] == {"color": "blue", "sizes": ["S", "M"]}
    assert tee["version"] == 1
    hat = products["HAT-1"]
    assert (hat["description"], hat["price"], hat["currency"]) == ("", "5.00", "EUR")
    assert (hat["stock"], hat["is_active"], hat["category"]) == (0, False, str(hats.id))
    assert (hat["tags"], hat["attributes"]) == ([], {})
    # The uploaded file is not kept once the job is done.
    with outcome():
        assert not JobFile.objects.filter(job_id=accepted["id"]).exists()


def test_import_updates_by_sku_bumps_versions_and_keeps_fields_the_file_does_not_give(
    tenant, editor, run_import
):
    existing = make_product(
        tenant, sku="MUG-1", name="Mug", description="Stoneware.", price="8.00", stock=4
    )
    etag = editor.get(f"{PRODUCTS}{existing.id}/")["ETag"]
    products_by_sku(editor)  # a cached list page, which the import must invalidate

    job = run_import(
        editor,
        json_file(
            [
                {"sku": "MUG-1", "name": "Big mug", "price": "9.50", "tags": ["kitchen"]},
                {"sku": "MUG-2", "name": "Small mug", "price": 6, "id": "ignored"},
            ]
        ),
    )

    assert (job["status"], job["succeeded"], job["failed"]) == ("succeeded", 2, 0)
    products = products_by_sku(editor)
    updated = products["MUG-1"]
    assert updated["id"] == str(existing.id)
    assert (updated["name"], updated["price"], updated["tags"]) == ("Big mug", "9.50", ["kitchen"])
    # Not in the file: left as they were.
    assert (updated["description"], updated["stock"]) == ("Stoneware.", 4)
    assert updated["version"] == 2
    assert updated["updated_at"] > updated["created_at"]
    assert products["MUG-2"]["version"] == 1
    assert products["MUG-2"]["price"] == "6.00"
    # If-Match with the ETag from before the import is stale now.
    stale = editor.patch(
        f"{PRODUCTS}{existing.id}/", {"stock": 1}, format="json", HTTP_IF_MATCH=etag
    )
    assert_problem(stale, 412, "precondition-failed")

    # The same rows again: every row is a write, so the versions go up once more.
    again = run_import(editor, json_file([{"sku": "MUG-1", "name": "Big mug", "price": "9.50"}]))
    assert again["succeeded"] == 1
    assert products_by_sku(editor)["MUG-1"]["version"] == 3


def test_csv_import_of_existing_skus_updates_them(tenant, editor, run_import):
    make_product(tenant, sku="A-1", name="Old", price="1.00")

    job = run_import(editor, csv_file("sku,name,price,stock\nA-1,New,2.00,7\n"))

    assert job["succeeded"] == 1
    product = products_by_sku(editor)["A-1"]
    assert (product["name"], product["price"], product["stock"], product["version"]) == (
        "New",
        "2.00",
        7,
        2,
    )


# --- rows the rules refuse --------------------------------------------------------------------


def test_malformed_rows_are_listed_by_row_and_field_and_only_good_rows_are_written(
    tenant, editor, run_import
):
    category = make_category(tenant)
    long_name = "x" * 256
    rows = [
        f"GOOD-1,Good one,,1.00,EUR,1,true,{category.slug},,",  # 1
        "BAD-PRICE,Bad price,,abc,EUR,1,true,,,",  # 2
        "BAD-STOCK,Negative stock,,1.00,EUR,-1,true,,,",  # 3
        "BAD-CUR,Unknown currency,,1.00,XYZ,1,true,,,",  # 4
        "BAD-CAT,Unknown category,,1.00,EUR,1,true,no-such-category,,",  # 5
        'BAD-ATTR,Bad attributes,,1.00,EUR,1,true,,,"{not json"',  # 6
        ",Missing sku,,1.00,EUR,1,true,,,",  # 7
        f"BAD-NAME,{long_name},,1.00,EUR,1,true,,,",  # 8
        "BAD-DEC,Three decimals,,1.005,EUR,1,true,,,",  # 9
        "BAD-CELLS,Too few cells,1.00",  # 10
        "BAD SKU,Space in the SKU,,1.00,EUR,1,true,,,",  # 11
        "GOOD-2,Ünïcödé ☕ 東京,,2.50,jpy,0,false,,a;b,",  # 12
        "BAD-TWO,,,-3,EUR,1,true,,,",  # 13: two fields wrong
    ]

    job = run_import(editor, csv_file(HEADER + "\n" + "\n".join(rows) + "\n"))

    assert job["status"] == "succeeded"  # it went through every row
    assert (job["total"], job["processed"], job["succeeded"], job["failed"]) == (13, 13, 2, 11)
    assert rows_and_fields(job) == [
        (2, "price"),
        (3, "stock"),
        (4, "currency"),
        (5, "category"),
        (6, "attributes"),
        (7, "sku"),
        (8, "name"),
        (9, "price"),
        (10, None),
        (11, "sku"),
        (13, "name"),
        (13, "price"),
    ]
    messages = {(error["row"], error.get("field")): error["message"] for error in job["errors"]}
    assert messages[(4, "currency")] == '"XYZ" is not an ISO 4217 currency code.'
    assert messages[(5, "category")] == 'Category "no-such-category" does not exist.'
    assert messages[(6, "attributes")].startswith("Not valid JSON")
    assert messages[(10, None)] == "The row has 3 values; the header has 10 columns."
    assert "2 decimal places" in messages[(9, "price")]
    assert job["errors_omitted"] == 0
    assert skus_of(tenant) == {"GOOD-1", "GOOD-2"}
    good = products_by_sku(editor)["GOOD-2"]
    assert (good["name"], good["currency"], good["tags"]) == ("Ünïcödé ☕ 東京", "JPY", ["a", "b"])


def test_json_rows_follow_the_api_rules(tenant, editor, run_import):
    job = run_import(
        editor,
        json_file(
            [
                {"sku": "J-1", "name": "Fine", "price": "1.00", "attributes": {"a": {"b": 1}}},
                "not an object",
                {"sku": "J-3", "name": 42, "price": "1.00"},
                {"sku": "J-4", "name": "Tags", "price": "1.00", "tags": ["t"] * 21},
                {"sku": "J-5", "name": "Attrs", "price": "1.00", "attributes": ["a"]},
                {"sku": "J-6", "name": "Nul\u0000", "price": "1.00"},
                {
                    "sku": "J-7",
                    "name": "No category",
                    "price": "1.00",
                    "category": str(uuid.uuid4()),
                },
                {"name": "No SKU", "price": "1.00"},
            ]
        ),
    )

    assert (job["total"], job["succeeded"], job["failed"]) == (8, 1, 7)
    assert rows_and_fields(job) == [
        (2, None),
        (3, "name"),
        (4, "tags"),
        (5, "attributes"),
        (6, "name"),
        (7, "category"),
        (8, "sku"),
    ]
    assert skus_of(tenant) == {"J-1"}


def test_a_sku_twice_in_a_file_is_imported_from_its_first_row_only(tenant, editor, run_import):
    text = "sku,name,price\nD-1,First,1.00\nD-2,Other,2.00\nD-1,Second,3.00\n"

    job = run_import(editor, csv_file(text))

    assert (job["succeeded"], job["failed"]) == (2, 1)
    assert job["errors"] == [
        {
            "row": 3,
            "field": "sku",
            "message": 'SKU "D-1" is already imported from row 1 of this file: a SKU may '
            "appear only once in a file.",
        }
    ]
    assert products_by_sku(editor)["D-1"]["name"] == "First"


def test_a_sku_refused_in_its_first_row_can_come_from_a_later_one(tenant, editor, run_import):
    text = "sku,name,price\nD-1,First,-1\nD-1,Second,3.00\n"

    job = run_import(editor, csv_file(text))

    assert (job["succeeded"], job["failed"]) == (1, 1)
    assert rows_and_fields(job) == [(1, "price")]
    assert products_by_sku(editor)["D-1"]["name"] == "Second"


def test_the_error_list_is_capped_and_says_how_many_more(tenant, editor, run_import, monkeypatch):
    monkeypatch.setattr(import_worker, "MAX_ERRORS", 3)
    text = "sku,name,price\n" + "".join(f"E-{n},Bad,-{n}\n" for n in range(1, 9))

    job = run_import(editor, csv_file(text))

    assert (job["failed"], len(job["errors"]), job["errors_omitted"]) == (8, 3, 5)
    assert [error["row"] for error in job["errors"]] == [1, 2, 3]


def test_a_batch_the_database_refuses_is_retried_row_by_row(
    tenant, editor, run_import, monkeypatch, settings
):
    # Rules that let a negative stock through: the database's check constraint refuses it.
    class LaxRow(imports.ImportRowSerializer):
        stock = serializers.IntegerField(required=False, default=0)

    monkeypatch.setattr(import_worker, "ImportRowSerializer", LaxRow)
    settings.CATALOG_IMPORT_BATCH_SIZE = 3
    text = "sku,name,price,stock\nR-1,One,1,1\nR-2,Two,1,-5\nR-3,Three,1,3\nR-4,Four,1,4\n"

    job = run_import(editor, csv_file(text))

    assert (job["status"], job["succeeded"], job["failed"]) == ("succeeded", 3, 1)
    assert job["errors"] == [
        {
            "row": 2,
            "message": "The database refused the row (constraint product_stock_not_negative).",
        }
    ]
    assert skus_of(tenant) == {"R-1", "R-3", "R-4"}


def test_the_plans_product_quota_holds_across_an_import(run_import):
    with outcome():
        plan = Plan.objects.create(
            code=f"import-{uuid.uuid4().hex[:12]}", name="Small", max_products=3
        )
    tenant = make_tenant(plan_code=plan.code)
    make_product(tenant, sku="Q-0", name="Existing", price="1.00")
    editor = editor_client(tenant)
    text = "sku,name,price\nQ-1,New,1\nQ-2,New,1\nQ-0,Updated,2\nQ-3,New,1\nQ-4,New,1\n"

    job = run_import(editor, csv_file(text))

    assert (job["succeeded"], job["failed"]) == (3, 2)
    assert [(error["row"], error["message"]) for error in job["errors"]] == [
        (4, "The plan allows 3 products: importing this row would add one more."),
        (5, "The plan allows 3 products: importing this row would add one more."),
    ]
    assert skus_of(tenant) == {"Q-0", "Q-1", "Q-2"}
    assert products_by_sku(editor)["Q-0"]["name"] == "Updated"
    # The API holds the same line afterwards.
    refused = editor.post(PRODUCTS, product_body(), format="json")
    assert_problem(refused, 403, "quota-exceeded")


# --- the upload: permissions, sizes, types, unreadable files ------------------------------------


def test_import_needs_credentials_and_the_catalog_import_permission(tenant):
    anonymous = APIClient().post(IMPORT, {"file": csv_file("sku,name,price\nA,A,1\n")})
    assert_problem(anonymous, 401, "not-authenticated")

    viewer = viewer_client(tenant)  # reads the catalog, imports nothing
    refused = upload(viewer, csv_file("sku,name,price\nA,A,1\n"))
    assert_problem(refused, 403, "permission-denied")
    with outcome():
        assert not Job.objects.filter(tenant=tenant).exists()


def test_a_file_over_the_import_limit_is_413(tenant, editor, settings):
    settings.CATALOG_IMPORT_MAX_BYTES = 1_000
    text = "sku,name,price\n" + "".join(f"BIG-{n},Product {n},1.00\n" for n in range(100))
    assert len(text) > 1_000

    response = upload(editor, csv_file(text))

    body = assert_problem(response, 413, "payload-too-large")
    assert body["detail"] == f"The file is {len(text)} bytes; the limit is 1000."
    with outcome():
        assert not Job.objects.filter(tenant=tenant).exists()


def test_a_body_over_the_routes_own_limit_is_refused_before_it_is_read(tenant, editor, settings):
    settings.MAX_REQUEST_BODY_BYTES_BY_PATH = {IMPORT: 2_000}
    text = "sku,name,price\n" + "".join(f"BIG-{n},Product {n},1.00\n" for n in range(200))

    assert_problem(upload(editor, csv_file(text)), 413, "payload-too-large")


def test_the_import_route_accepts_bodies_past_the_global_limit_and_only_it(
    tenant, editor, settings
):
    assert settings.MAX_REQUEST_BODY_BYTES == 1024 * 1024
    description = "d" * 10_000
    text = "sku,name,description,price\n" + "".join(
        f"LONG-{n},Product {n},{description},1.00\n" for n in range(120)
    )
    assert len(text) > settings.MAX_REQUEST_BODY_BYTES

    accepted = upload(editor, csv_file(text))
    assert accepted.status_code == 202, accepted.content
    assert accepted.json()["total"] == 120

    # Everywhere else the global limit stands.
    body = product_body(description=description, attributes={"blob": "x" * 1_100_000})
    refused = editor.post(PRODUCTS, body, format="json")
    assert_problem(refused, 413, "payload-too-large")


def test_anything_but_a_csv_or_json_file_in_a_multipart_body_is_415(tenant, editor):
    as_json = editor.post(IMPORT, {"file": "sku,name,price"}, format="json")
    assert_problem(as_json, 415, "unsupported-media-type")

    spreadsheet = SimpleUploadedFile(
        "products.xlsx",
        b"PK\x03\x04",
        content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    )
    assert_problem(upload(editor, spreadsheet), 415, "unsupported-media-type")


def test_a_csv_file_is_recognized_by_its_name_whatever_its_part_type(tenant, editor):
    file = csv_file("sku,name,price\nA-1,A,1\n", content_type="application/vnd.ms-excel")

    response = upload(editor, file)

    assert response.status_code == 202, response.content


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (b"", "p.csv", "The file is empty."),
        (b"  \n\n", "p.csv", "The file is empty."),
        (b"sku,name,price\n", "p.csv", "The file holds no products."),
        (b"A-1,Widget,9.99\n", "p.csv", "The first line must be a header"),
        (b"sku,name,prize\nA,A,1\n", "p.csv", "Unknown column(s): prize."),
        (b"sku,name\nA,A\n", "p.csv", "The header lacks the required column(s): price."),
        (b"sku,name,price,name\nA,A,1,B\n", "p.csv", "Column(s) named more than once: name."),
        ("sku,name,price\nA,Café,1\n".encode("latin-1"), "p.csv", "The file is not UTF-8"),
        (b'[{"sku": ', "p.json", "The file is not valid JSON"),
        (b'{"sku": "A"}', "p.json", "A JSON import is a list of product objects"),
        (b"[]", "p.json", "The file holds no products."),
    ],
)
def test_an_unreadable_file_is_400_naming_file(tenant, editor, content, name, message):
    response = upload(editor, SimpleUploadedFile(name, content, content_type=""))

    body = assert_problem(response, 400, "validation-error")
    assert [error["field"] for error in body["errors"]] == ["file"]
    assert body["errors"][0]["message"].startswith(message), body
    with outcome():
        assert not Job.objects.filter(tenant=tenant).exists()


def test_a_request_without_a_file_is_400(tenant, editor):
    response = editor.post(IMPORT, {"other": "x"}, format="multipart")

    body = assert_problem(response, 400, "validation-error")
    assert [error["field"] for error in body["errors"]] == ["file"]


def test_a_byte_order_mark_and_crlf_line_ends_are_fine(tenant, editor, run_import):
    content = "\ufeffsku,name,price\r\nBOM-1,Bom,1.00\r\n".encode()

    job = run_import(editor, SimpleUploadedFile("p.csv", content, content_type="text/csv"))

    assert (job["succeeded"], job["failed"]) == (1, 0)
    assert skus_of(tenant) == {"BOM-1"}


# --- the job resource ---------------------------------------------------------------------------


def test_another_tenants_job_is_404_and_not_listed(tenant, editor, run_import):
    job = run_import(editor, csv_file("sku,name,price\nA-1,A,1\n"))
    other = make_tenant(plan_code="pro")
    outsider = editor_client(other)

    assert_problem(outsider.get(f"{JOBS}{job['id']}/"), 404, "not-found")
    assert outsider.get(JOBS).json()["results"] == []
    assert_problem(editor.get(f"{JOBS}{uuid.uuid4()}/"), 404, "not-found")


def test_jobs_are_listed_newest_first_with_cursor_pages(tenant, editor, run_import):
    ids = [run_import(editor, csv_file(f"sku,name,price\nL-{n},L,1\n"))["id"] for n in range(3)]
    viewer = viewer_client(tenant)  # catalog.read is enough to follow jobs

    first = viewer.get(JOBS, {"page_size": 2})
    assert first.status_code == 200, first.content
    page = first.json()
    assert [job["id"] for job in page["results"]] == [ids[2], ids[1]]
    assert page["results"][0]["status"] == "succeeded"
    assert page["previous"] is None
    second = viewer.get(page["next"]).json()
    assert [job["id"] for job in second["results"]] == [ids[0]]
    assert second["next"] is None


def test_import_jobs_need_catalog_read(tenant, editor, run_import):
    job = run_import(editor, csv_file("sku,name,price\nJR-1,A,1\n"))
    viewer = viewer_client(tenant)
    assert [row["id"] for row in viewer.get(JOBS).json()["results"]] == [job["id"]]
    assert viewer.get(f"{JOBS}{job['id']}/").status_code == 200

    # Without catalog.read the import's job, which lists the file's rows, is not there at all.
    outsider = client_without_catalog_read(tenant)
    assert outsider.get(JOBS).json()["results"] == []
    assert_problem(outsider.get(f"{JOBS}{job['id']}/"), 404, "not-found")
    assert_problem(APIClient().get(JOBS), 401, "not-authenticated")


# --- events -------------------------------------------------------------------------------------


def test_the_finished_event_is_published_once_the_job_has_committed(
    tenant, editor, django_capture_on_commit_callbacks
):
    with tasks_run_inline(), published_events("catalog.import.*") as received:
        with django_capture_on_commit_callbacks(execute=False) as queued:
            response = upload(editor, csv_file("sku,name,price\nEV-1,A,1\nEV-2,B,-1\n"))
        assert response.status_code == 202
        (start_job,) = queued

        # The job runs (inline) and commits its end; its event waits for that commit.
        with django_capture_on_commit_callbacks(execute=False) as after_job:
            start_job()
        job = editor.get(response["Location"]).json()
        assert job["status"] == "succeeded"
        assert received == []

        for callback in after_job:
            callback()

    (event,) = received
    assert event.topic == "catalog.import.finished"
    assert event.tenant_id == str(tenant.id)
    assert event.data == {
        "job_id": job["id"],
        "kind": "products.import",
        "status": "succeeded",
        "total": 2,
        "processed": 2,
        "succeeded": 1,
        "failed": 1,
    }
    assert event.actor["user_id"] is not None


# --- scale --------------------------------------------------------------------------------------


def test_queries_do_not_grow_with_the_rows(
    tenant, editor, settings, django_capture_on_commit_callbacks, django_assert_max_num_queries
):
    settings.CATALOG_IMPORT_BATCH_SIZE = 1_000
    categories = [make_category(tenant) for _ in range(3)]
    make_product(tenant, sku="S-00001", name="Existing", price="1.00")
    rows = "".join(
        f"S-{n:05d},Product {n},{n % 100}.50,{categories[n % 3].slug},a;b\n"
        for n in range(1, 2_501)
    )
    file = csv_file("sku,name,price,category,tags\n" + rows)

    # The request (about 10 queries), the job's start and end (about 10), and three batches of
    # at most 1,000 rows with about a dozen each (savepoints included): never one per row.
    with (
        tasks_run_inline(),
        django_assert_max_num_queries(80),
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = upload(editor, file)

    job = editor.get(response["Location"]).json()
    assert (job["status"], job["succeeded"], job["failed"]) == ("succeeded", 2_500, 0)
    with outcome():
        assert Product.objects.filter(tenant=tenant).count() == 2_500
        assert Product.objects.get(tenant=tenant, sku="S-00001").version == 2
        product = Product.objects.get(tenant=tenant, sku="S-02500")
    assert (product.price, product.category_id, product.tags) == (
        Decimal("0.50"),
        categories[2500 % 3].id,
        ["a", "b"],
    )


# --- the task itself ----------------------------------------------------------------------------


def test_a_task_delivered_again_after_the_job_finished_changes_nothing(tenant, editor, run_import):
    job = run_import(editor, csv_file("sku,name,price\nT-1,A,1\n"))

    with tasks_run_inline(), tenant_context(tenant.id):
        result = catalog_import_task.apply(args=[job["id"]]).get()

    assert result is None
    assert products_by_sku(editor)["T-1"]["version"] == 1
    assert editor.get(f"{JOBS}{job['id']}/").json() == job


def test_a_job_that_breaks_midway_fails_keeping_the_batches_it_committed(
    tenant, editor, run_import, monkeypatch, settings
):
    settings.CATALOG_IMPORT_BATCH_SIZE = 2
    calls = []
    resolve = import_worker._categories_by_ref

    def broken_on_the_second_batch(refs):
        calls.append(refs)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return resolve(refs)

    monkeypatch.setattr(import_worker, "_categories_by_ref", broken_on_the_second_batch)
    text = "sku,name,price\nF-1,A,1\nF-2,B,-1\nF-3,C,1\nF-4,D,1\n"

    with published_events("catalog.import.*") as received:
        job = run_import(editor, csv_file(text))

    assert job["status"] == "failed"
    assert (job["processed"], job["succeeded"], job["failed"]) == (2, 1, 1)
    assert job["detail"] == (
        "The import stopped unexpectedly after 2 of 4 rows. The rows counted as succeeded were "
        "written; import the file again to finish."
    )
    assert rows_and_fields(job) == [(2, "price")]
    assert skus_of(tenant) == {"F-1"}
    assert [(event.data["status"], event.data["succeeded"]) for event in received] == [
        ("failed", 1)
    ]
    with outcome():
        assert not JobFile.objects.filter(job_id=job["id"]).exists()


def test_a_job_whose_worker_died_starts_over_when_redelivered(tenant, editor):
    # The upload commits nothing here (no callbacks run): as if the first worker took the task
    # and died after writing one batch.
    response = upload(editor, csv_file("sku,name,price\nZ-1,A,1\nZ-2,B,-1\n"))
    job_id = response.json()["id"]
    make_product(tenant, sku="Z-1", name="Written by the dead run", price="1.00")
    with outcome():
        Job.objects.filter(pk=job_id).update(status="running", attempts=1, processed=1)

    with tasks_run_inline(), tenant_context(tenant.id):
        assert catalog_import_task.apply(args=[job_id]).get() == "succeeded"

    job = editor.get(f"{JOBS}{job_id}/").json()
    assert (job["processed"], job["succeeded"], job["failed"]) == (2, 1, 1)
    assert products_by_sku(editor)["Z-1"]["name"] == "A"


def test_a_job_interrupted_too_often_is_given_up(tenant, editor):
    response = upload(editor, csv_file("sku,name,price\nG-1,A,1\n"))
    job_id = response.json()["id"]
    with outcome():
        Job.objects.filter(pk=job_id).update(status="running", attempts=3)

    with tasks_run_inline(), tenant_context(tenant.id):
        assert catalog_import_task.apply(args=[job_id]).get() is None

    job = editor.get(f"{JOBS}{job_id}/").json()
    assert job["status"] == "failed"
    assert job["detail"] == "The job was interrupted 3 times and was given up."
    assert skus_of(tenant) == set()


# --- on a real worker ---------------------------------------------------------------------------


def wait_for(check, *, timeout: float = 30.0, what: str):
    """Poll until `check()` returns something truthy (the worker is another process)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"Waited {timeout:.0f}s for {what}.")
        time.sleep(0.2)


@pytest.mark.django_db(transaction=True)
def test_an_import_runs_on_the_worker_and_notifies_the_other_members(celery_worker):
    tenant = make_tenant(plan_code="pro")
    editor = editor_client(tenant)
    colleague = viewer_client(tenant)  # holds notifications.read
    make_product(tenant, sku="W-1", name="Before", price="1.00")
    text = "sku,name,price\nW-1,After,2.00\nW-2,New,3.00\nW-3,Bad,-1\n"

    response = upload(editor, csv_file(text))
    assert response.status_code == 202, response.content

    def finished() -> dict | None:
        job = editor.get(response["Location"]).json()
        return job if job["status"] in ("succeeded", "failed") else None

    job = wait_for(finished, what="the import job to finish on the worker")
    assert (job["status"], job["processed"], job["succeeded"], job["failed"]) == (
        "succeeded",
        3,
        2,
        1,
    )
    assert job["errors"] == [{"row": 3, "field": "price", "message": job["errors"][0]["message"]}]
    products = products_by_sku(editor)
    assert (products["W-1"]["name"], products["W-1"]["version"]) == ("After", 2)
    assert set(products) == {"W-1", "W-2"}

    def import_notifications(client: APIClient) -> list[dict]:
        inbox = client.get(f"{API}/notifications/").json()["results"]
        return [n for n in inbox if n["topic"] == "catalog.import.finished"]

    (notification,) = wait_for(
        lambda: import_notifications(colleague), what="the colleague's notification"
    )
    assert notification["data"]["job_id"] == job["id"]
    assert (notification["data"]["succeeded"], notification["data"]["failed"]) == (2, 1)
    # The member who started the import caused the event: it is not notified back to them.
    assert import_notifications(editor) == []
