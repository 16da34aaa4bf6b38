"""Exports on S3 (kernel/exports/, docs/operations.md "Data exports: storage"): the `exports`
storage is django-storages' S3Storage with the options of config/settings/base.py, against a real
S3-compatible server on loopback (tests/fixtures/s3_server.py). The archive is written to the
bucket, private; its link serves it with no credential; the beat job deletes it."""

import datetime
import hashlib
import io
import tarfile

import httpx
import pytest
from rest_framework.test import APIClient

from kernel.context import tenant_context
from kernel.exports import services as exports
from kernel.models import Job
from tests.fixtures.s3_server import CREDENTIALS, REGION
from tests.helpers import assert_problem, client_for, owner_of, tasks_run_inline

pytestmark = [pytest.mark.django_db, pytest.mark.tenant(name="Acme S3", plan_code="pro")]

TENANT_EXPORT = "/api/v1/tenant/export/"
PREFIX = "exports"
# Grantees that would make an object readable beyond the bucket's own account.
PUBLIC_GROUPS = {
    "http://acs.amazonaws.com/groups/global/AllUsers",
    "http://acs.amazonaws.com/groups/global/AuthenticatedUsers",
}


@pytest.fixture
def bucket(settings, monkeypatch, tmp_path, s3_server) -> str:
    """A bucket of the test's own behind the `exports` storage, with production's options; the
    credentials only in the environment, where boto3's chain finds them."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_S3_ACCESS_KEY_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    name = s3_server.bucket()
    settings.STORAGES = {
        **settings.STORAGES,
        "exports": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                **settings.EXPORTS_S3_OPTIONS,
                "bucket_name": name,
                "location": PREFIX,
                "endpoint_url": s3_server.endpoint_url,
                "region_name": REGION,
            },
        },
    }
    return name


def run_export(client: APIClient, django_capture_on_commit_callbacks) -> dict:
    """Ask for a tenant export and let its job run (inline, once the request has committed);
    the finished job as the client then reads it."""
    with tasks_run_inline(), django_capture_on_commit_callbacks(execute=True):
        response = client.post(TENANT_EXPORT)
    assert response.status_code == 202, response.content
    job = client.get(response["Location"])
    assert job.status_code == 200, job.content
    assert job.json()["status"] == "succeeded", job.json()
    return job.json()


def keys(s3_server, bucket: str) -> list[str]:
    listing = s3_server.client().list_objects_v2(Bucket=bucket)
    return [entry["Key"] for entry in listing.get("Contents", [])]


def test_no_credential_is_a_setting(settings):
    credentials = {"access_key", "secret_key", "security_token", "session_profile"}
    assert not credentials & set(settings.EXPORTS_S3_OPTIONS)


def test_an_export_on_s3_is_private_served_by_its_link_and_deleted_when_it_expires(
    tenant, bucket, s3_server, django_capture_on_commit_callbacks
):
    owner = client_for(owner_of(tenant), tenant)
    job = run_export(owner, django_capture_on_commit_callbacks)
    result = job["result"]

    # In the bucket, under the prefix, named by tenant and job; stored as the gzip it is.
    key = f"{PREFIX}/{tenant.pk}/{job['id']}.tar.gz"
    assert keys(s3_server, bucket) == [key]
    head = s3_server.client().head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == result["size"]
    assert head["ContentType"] == "application/gzip"
    assert "ContentEncoding" not in head

    # Private: the account's own grant alone, and an unsigned request is refused.
    grants = s3_server.client().get_object_acl(Bucket=bucket, Key=key)["Grants"]
    assert grants
    assert not {grant["Grantee"].get("URI") for grant in grants} & PUBLIC_GROUPS
    assert [grant["Grantee"]["Type"] for grant in grants] == ["CanonicalUser"]
    assert httpx.get(f"{s3_server.endpoint_url}/{bucket}/{key}").status_code == 403

    # The link, with no credential, serves the object as stored.
    anonymous = APIClient()
    response = anonymous.get(result["download_url"])
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/gzip"
    assert int(response["Content-Length"]) == result["size"]
    archive = b"".join(response.streaming_content)
    assert len(archive) == result["size"]
    assert hashlib.sha256(archive).hexdigest() == result["sha256"]
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        assert tar.getnames()[0] == "manifest.json"

    # A day later the beat job deletes the object; the link is then a 410.
    with tenant_context(tenant.pk):
        Job.objects.filter(pk=job["id"]).update(
            finished_at=datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=25)
        )
    assert exports.archives_delete_expired() == 1
    assert keys(s3_server, bucket) == []
    assert_problem(anonymous.get(result["download_url"]), 410, "export-expired")
    assert owner.get(f"/api/v1/jobs/{job['id']}/").json()["result"]["download_url"] is None


def test_an_archive_gone_from_the_bucket_before_its_time_is_a_410(
    tenant, bucket, s3_server, django_capture_on_commit_callbacks
):
    """A lifecycle rule, or a hand, removed the object: the link says expired, not 500."""
    owner = client_for(owner_of(tenant), tenant)
    job = run_export(owner, django_capture_on_commit_callbacks)
    s3_server.client().delete_object(Bucket=bucket, Key=f"{PREFIX}/{tenant.pk}/{job['id']}.tar.gz")

    assert_problem(APIClient().get(job["result"]["download_url"]), 410, "export-expired")
