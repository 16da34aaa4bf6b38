"""Exports of a tenant's data and of a person's own (kernel/exports/, docs/data.md), through the
API: the job, its signed link, the archive opened and compared with what the API shows."""

import datetime
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.storage import storages
from rest_framework.test import APIClient

from kernel import audit_chain
from kernel.context import tenant_context
from kernel.exports import services as exports
from kernel.models import Job
from notifications.models import Notification
from tests.catalog_helpers import make_category, make_product
from tests.factories import make_member, make_tenant
from tests.helpers import assert_problem, client_for, owner_of, tasks_run_inline

pytestmark = [pytest.mark.django_db, pytest.mark.tenant(name="Acme Exports", plan_code="pro")]

API = "/api/v1"
TENANT_EXPORT = f"{API}/tenant/export/"
ME_EXPORT = f"{API}/auth/me/export/"
JOBS = f"{API}/jobs/"
VERIFY_SCRIPT = Path(settings.BASE_DIR) / "scripts" / "verify_export.py"
RESOURCES = {
    "products",
    "categories",
    "members",
    "roles",
    "invitations",
    "api_keys",
    "webhooks",
    "notifications",
    "oauth_apps",
    "audit_events",
}


@pytest.fixture(autouse=True)
def export_storage(settings, tmp_path):
    """Archives in a directory of the test's own, through the same storage API as production."""
    settings.STORAGES = {
        **settings.STORAGES,
        "exports": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "exports")},
        },
    }
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = False
    return tmp_path / "exports"


def run_export(client: APIClient, url: str, django_capture_on_commit_callbacks) -> dict:
    """Ask for an export and let its job run (inline, once the request has committed); the
    finished job as the client then reads it."""
    with tasks_run_inline(), django_capture_on_commit_callbacks(execute=True):
        response = client.post(url)
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "pending"
    job = client.get(response["Location"])
    assert job.status_code == 200, job.content
    return job.json()


def download(job: dict) -> bytes:
    """The archive, fetched by its link with no credential at all."""
    response = APIClient().get(job["result"]["download_url"])
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/gzip"
    assert response["Cache-Control"] == "private, no-store"
    return b"".join(response.streaming_content)


def opened(archive: bytes) -> dict[str, list | dict]:
    """The archive's members: the manifest as an object, each NDJSON file as its rows."""
    files: dict[str, list | dict] = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        names = tar.getnames()
        assert names[0] == "manifest.json"
        for member in tar.getmembers():
            body = tar.extractfile(member).read()
            if member.name == "manifest.json":
                files[member.name] = json.loads(body)
            else:
                files[member.name] = [json.loads(line) for line in body.splitlines()]
    return files


def listed(client: APIClient, url: str) -> list[dict]:
    response = client.get(url, {"page_size": 100})
    assert response.status_code == 200, response.content
    return response.json()["results"]


def populate(tenant, owner_client: APIClient) -> dict:
    """One of every kind of object the tenant can have, most through the API."""
    category = make_category(tenant, name="Garden tools")
    make_product(tenant, sku="RAKE-1", name="Rake ünïcode", category=category)
    make_product(tenant, sku="HOE-2", name="Hoe", price="12.50")
    role = owner_client.post(
        f"{API}/roles/", {"name": "auditor", "permissions": ["audit.read"]}, format="json"
    )
    assert role.status_code == 201, role.content
    member = make_member(tenant, roles=("editor",), email=f"member@{tenant.slug}.example")
    viewer_role = next(
        row for row in listed(owner_client, f"{API}/roles/") if row["name"] == "viewer"
    )
    invitation = owner_client.post(
        f"{API}/invitations/",
        {"email": f"invitee@{tenant.slug}.example", "roles": [viewer_role["id"]]},
        format="json",
    )
    assert invitation.status_code == 201, invitation.content
    key = owner_client.post(f"{API}/api-keys/", {"name": "ci", "permissions": ["catalog.read"]})
    assert key.status_code == 201, key.content
    webhook = owner_client.post(
        f"{API}/webhooks/",
        {"url": "https://93.184.215.14/hooks", "topics": ["catalog.*"]},
        format="json",
    )
    assert webhook.status_code == 201, webhook.content
    app = owner_client.post(
        f"{API}/oauth-apps/",
        {
            "name": "Shop front",
            "redirect_uris": ["https://shop.example/callback"],
            "scopes": ["catalog.read"],
        },
        format="json",
    )
    assert app.status_code == 201, app.content
    with tenant_context(tenant.pk):
        Notification.objects.create(
            tenant=tenant, user=member.user, topic="catalog.product.created", data={"sku": "RAKE-1"}
        )
    return {
        "key": key.json()["key"],
        "webhook_secret": webhook.json()["secret"],
        "client_secret": app.json()["client_secret"],
        "member": member,
    }


def test_a_tenant_export_holds_every_resource_as_the_api_shows_it(
    tenant, django_capture_on_commit_callbacks
):
    owner = client_for(owner_of(tenant), tenant)
    secrets = populate(tenant, owner)

    job = run_export(owner, TENANT_EXPORT, django_capture_on_commit_callbacks)

    assert job["kind"] == "tenant_export"
    assert job["status"] == "succeeded", job
    assert job["total"] == job["processed"] == len(RESOURCES)
    result = job["result"]
    assert set(result) == {"download_url", "expires_at", "size", "sha256"}
    expires_at = datetime.datetime.fromisoformat(result["expires_at"])
    assert expires_at - datetime.datetime.now(datetime.UTC) > datetime.timedelta(hours=23)
    archive = download(job)
    assert len(archive) == result["size"]
    assert hashlib.sha256(archive).hexdigest() == result["sha256"]

    files = opened(archive)
    manifest = files.pop("manifest.json")
    assert set(files) == {f"{name}.ndjson" for name in RESOURCES}
    assert manifest["format"] == "tenantapi-export"
    assert manifest["version"] == 1
    assert manifest["tenant"] == {"id": str(tenant.pk), "name": tenant.name, "slug": tenant.slug}
    for name, rows in files.items():
        assert manifest["files"][name]["rows"] == len(rows), name

    # Each resource is what the API lists, field for field where both show one.
    for resource, url in (
        ("products", "products/"),
        ("categories", "categories/"),
        ("roles", "roles/"),
        ("api_keys", "api-keys/"),
        ("webhooks", "webhooks/"),
        ("oauth_apps", "oauth-apps/"),
        ("members", "members/"),
        ("invitations", "invitations/"),
    ):
        by_api = {row["id"]: row for row in listed(owner, f"{API}/{url}")}
        exported = {row["id"]: row for row in files[f"{resource}.ndjson"]}
        assert exported.keys() == by_api.keys(), resource
        for row_id, row in exported.items():
            shown = by_api[row_id]
            common = (set(row) & set(shown)) - {"last_used_at"}
            assert {field: row[field] for field in common} == {
                field: shown[field] for field in common
            }, resource
    members = {row["user"]["email"]: row for row in files["members.ndjson"]}
    member = members[f"member@{tenant.slug}.example"]
    assert [role["name"] for role in member["roles"]] == ["editor"]
    assert {row["email"] for row in files["invitations.ndjson"]} == {
        f"invitee@{tenant.slug}.example"
    }
    assert [row["data"] for row in files["notifications.ndjson"]] == [{"sku": "RAKE-1"}]

    # The audit log's copy is the chain itself: it verifies from its first line, and ends at
    # the head the API's verification reports (the export's own request is in it).
    events = files["audit_events.ndjson"]
    previous = audit_chain.GENESIS
    for event in events:
        assert event["prev_hash"] == previous
        values = {key: event[key] for key in audit_chain.CANONICAL_FIELDS}
        assert audit_chain.event_hash(values, previous) == event["hash"]
        previous = event["hash"]
    verified = owner.get(f"{API}/audit-events/verify/").json()
    assert verified["valid"] is True
    assert verified["head"] == previous
    assert events[-1]["action"] == "tenants.tenant.exported"

    # No secret of any kind, in any file.
    text = gzip.decompress(archive).decode("utf-8")
    for secret in secrets["key"], secrets["webhook_secret"], secrets["client_secret"]:
        assert secret not in text
    for field in ('"key_hash"', '"secret"', '"token_hash"', '"password"', '"client_secret"'):
        assert field not in text


def test_nothing_of_another_tenant_is_in_the_archive(tenant, django_capture_on_commit_callbacks):
    other = make_tenant(name="Zebra Other Corp")
    other_owner = owner_of(other)
    other_client = client_for(other_owner, other)
    populate(other, other_client)
    other_member = make_member(other, roles=("viewer",), email="zed@zebra.example")
    with tenant_context(other.pk):
        other_ids = [str(pk) for pk in Notification.objects.values_list("id", flat=True)] + [
            str(row) for row in Job.objects.values_list("id", flat=True)
        ]
    other_products = listed(other_client, f"{API}/products/")
    other_ids += [row["id"] for row in other_products]
    other_ids += [row["id"] for row in listed(other_client, f"{API}/roles/")]
    other_ids += [str(other.pk), str(other_owner.pk), str(other_member.pk)]

    owner = client_for(owner_of(tenant), tenant)
    populate(tenant, owner)
    job = run_export(owner, TENANT_EXPORT, django_capture_on_commit_callbacks)
    text = gzip.decompress(download(job)).decode("utf-8")

    assert "RAKE-1" in text  # the tenant's own products are there
    for value in [*other_ids, other.name, other.slug, other_owner.email, "zed@zebra.example"]:
        assert value not in text, value


def test_a_tampered_or_foreign_link_is_a_404_and_an_expired_one_a_410(
    tenant, export_storage, django_capture_on_commit_callbacks
):
    owner = client_for(owner_of(tenant), tenant)
    job = run_export(owner, TENANT_EXPORT, django_capture_on_commit_callbacks)
    url = job["result"]["download_url"]
    token = url.rstrip("/").rsplit("/", 1)[1]
    anonymous = APIClient()

    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert_problem(anonymous.get(f"{API}/exports/{tampered}/"), 404, "not-found")
    assert_problem(anonymous.get(f"{API}/exports/not-a-token/"), 404, "not-found")
    # A value we signed for another purpose is no link.
    from django.core import signing

    other_purpose = signing.dumps({"t": str(tenant.pk), "j": job["id"]})
    assert_problem(anonymous.get(f"{API}/exports/{other_purpose}/"), 404, "not-found")

    # A day later the beat job deletes the archive; the link is then a 410.
    assert anonymous.get(url).status_code == 200
    with tenant_context(tenant.pk):
        Job.objects.filter(pk=job["id"]).update(
            finished_at=datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=25)
        )
    assert exports.archives_delete_expired() == 1
    assert not any(export_storage.rglob("*.tar.gz"))
    assert_problem(anonymous.get(url), 410, "export-expired")
    assert owner.get(f"{JOBS}{job['id']}/").json()["result"]["download_url"] is None


def test_an_unexpired_link_past_its_time_is_refused_before_the_beat_job_runs(
    tenant, django_capture_on_commit_callbacks
):
    owner = client_for(owner_of(tenant), tenant)
    job = run_export(owner, TENANT_EXPORT, django_capture_on_commit_callbacks)
    with tenant_context(tenant.pk):
        stored = Job.objects.get(pk=job["id"])
        stored.result["expires_at"] = "2020-01-01T00:00:00+00:00"
        Job.objects.filter(pk=stored.pk).update(result=stored.result)
    assert_problem(APIClient().get(job["result"]["download_url"]), 410, "export-expired")


def test_exporting_the_tenant_needs_tenant_export_and_its_job_is_hidden_from_others(
    tenant, django_capture_on_commit_callbacks
):
    viewer = client_for(make_member(tenant, roles=("viewer",)).user, tenant)
    assert_problem(viewer.post(TENANT_EXPORT), 403, "permission-denied")

    owner = client_for(owner_of(tenant), tenant)
    job = run_export(owner, TENANT_EXPORT, django_capture_on_commit_callbacks)
    # The job's link opens the whole tenant: only those who may export see it.
    assert_problem(viewer.get(f"{JOBS}{job['id']}/"), 404, "not-found")
    assert job["id"] not in {row["id"] for row in listed(viewer, JOBS)}
    admin = client_for(make_member(tenant, roles=("admin",)).user, tenant)
    assert admin.get(f"{JOBS}{job['id']}/").status_code == 200

    # An API key holding the permission may export too.
    key = owner.post(f"{API}/api-keys/", {"name": "backup", "permissions": ["tenant.export"]})
    machine = APIClient()
    machine.credentials(HTTP_AUTHORIZATION=f"Api-Key {key.json()['key']}")
    assert run_export(machine, TENANT_EXPORT, django_capture_on_commit_callbacks)["status"] == (
        "succeeded"
    )
    with tenant_context(tenant.pk):
        assert not Job.objects.filter(status="failed").exists()
    assert not storages["exports"].exists("nothing")


def test_a_person_exports_their_own_data_from_every_tenant_and_nobody_else_sees_it(
    tenant, django_capture_on_commit_callbacks
):
    person = make_member(tenant, roles=("editor",), email="pat@acme.example").user
    second = make_tenant(name="Second Home")
    make_member(second, roles=("viewer",), user=person)
    colleague = make_member(tenant, roles=("editor",), email="colleague@acme.example").user
    with tenant_context(tenant.pk):
        Notification.objects.create(tenant=tenant, user=person, topic="t.a", data={"n": "mine"})
        Notification.objects.create(
            tenant=tenant, user=colleague, topic="t.a", data={"n": "theirs"}
        )
    client = client_for(person, tenant)

    job = run_export(client, ME_EXPORT, django_capture_on_commit_callbacks)

    assert job["kind"] == "personal_export"
    assert job["status"] == "succeeded", job
    archive = download(job)
    files = opened(archive)
    manifest = files.pop("manifest.json")
    assert manifest["kind"] == "personal"
    assert {t["id"] for t in manifest["tenants"]} == {str(tenant.pk), str(second.pk)}
    (account,) = files["account.ndjson"]
    assert account["email"] == "pat@acme.example"
    assert {row["tenant_id"] for row in files["memberships.ndjson"]} == {
        str(tenant.pk),
        str(second.pk),
    }
    assert [row["data"] for row in files["notifications.ndjson"]] == [{"n": "mine"}]
    text = gzip.decompress(archive).decode("utf-8")
    assert "colleague@acme.example" not in text
    assert "theirs" not in text

    # The job and its link are the person's alone: not even the owner sees them.
    owner = client_for(owner_of(tenant), tenant)
    assert_problem(owner.get(f"{JOBS}{job['id']}/"), 404, "not-found")
    assert job["id"] not in {row["id"] for row in listed(owner, JOBS)}


def test_an_api_key_has_no_personal_data_to_export(tenant):
    owner = client_for(owner_of(tenant), tenant)
    key = owner.post(f"{API}/api-keys/", {"name": "k", "permissions": ["catalog.read"]})
    machine = APIClient()
    machine.credentials(HTTP_AUTHORIZATION=f"Api-Key {key.json()['key']}")
    assert_problem(machine.post(ME_EXPORT), 403, "permission-denied")
    with tenant_context(tenant.pk):
        assert not Job.objects.exists()


def test_the_verification_script_of_the_docs_checks_an_archive(
    tenant, tmp_path, django_capture_on_commit_callbacks
):
    assert VERIFY_SCRIPT.read_text() in (Path(settings.BASE_DIR) / "docs" / "data.md").read_text()
    owner = client_for(owner_of(tenant), tenant)
    populate(tenant, owner)
    job = run_export(owner, TENANT_EXPORT, django_capture_on_commit_callbacks)
    archive = tmp_path / "export.tar.gz"
    archive.write_bytes(download(job))

    def verify(path: Path) -> subprocess.CompletedProcess:
        command = [sys.executable, str(VERIFY_SCRIPT), str(path)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    checked = verify(archive)
    assert checked.returncode == 0, checked.stderr
    head = owner.get(f"{API}/audit-events/verify/").json()["head"]
    assert checked.stdout.strip().endswith(f"audit chain head {head}")

    # One product changed in the archive: the manifest's digest no longer matches.
    files = {}
    with tarfile.open(archive, mode="r:gz") as tar:
        for member in tar.getmembers():
            files[member.name] = tar.extractfile(member).read()
    files["products.ndjson"] = files["products.ndjson"].replace(b"RAKE-1", b"RAKE-9")
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(tampered, mode="w:gz") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    refused = verify(tampered)
    assert refused.returncode != 0
    assert "products.ndjson" in refused.stderr
