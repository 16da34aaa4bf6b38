"""The audit log's hash chain: one unbroken chain per tenant however many write at once, found
broken when an event is changed behind the application's back, exported in a form anyone can
check with the script of docs/audit.md, and still verifiable once old events are pruned."""

import hashlib
import importlib
import itertools
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from django.apps import apps
from django.conf import settings
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from kernel import audit, audit_chain
from kernel.context import operator_scope, tenant_context
from kernel.quotas import Resource, enforce_quota
from kernel.tasks import audit_chain_verify_task
from kernel.tenancy.models import AuditChainHead, AuditEvent, Plan, Tenant
from tests.factories import DEFAULT_PASSWORD, make_member, make_tenant
from tests.fixtures.logs import captured_logs
from tests.fixtures.servers import server_environment, start_live_wsgi_server
from tests.helpers import API, assert_problem, client_for, outcome, owner_of

pytestmark = [pytest.mark.django_db, pytest.mark.tenant(name="Acme", plan_code="pro")]

EVENTS = f"{API}/audit-events/"
VERIFY = f"{EVENTS}verify/"
EXPORT = f"{EVENTS}export/"
ROLES = f"{API}/roles/"
SCRIPT = Path(settings.BASE_DIR) / "scripts" / "verify_audit_chain.py"
DOCS = Path(settings.BASE_DIR) / "docs" / "audit.md"
TRIGGER = "tenants_auditevent_append_only"
GENESIS = "0" * 64


# --- helpers -----------------------------------------------------------------------------------


def add_event(tenant, **changes) -> AuditEvent:
    with operator_scope("test setup: an audit event"), transaction.atomic():
        return audit.record(
            tenant_id=tenant.id, action="tests.thing.done", target_type="thing", changes=changes
        )


def chain_of(tenant) -> list[AuditEvent]:
    with outcome():
        return list(AuditEvent.objects.filter(tenant=tenant).order_by("created_at", "id"))


def create_role(client, name: str) -> None:
    response = client.post(ROLES, {"name": name, "permissions": ["catalog.read"]}, format="json")
    assert response.status_code == 201, response.content


def exported(client, fmt: str, **params) -> bytes:
    response = client.get(EXPORT, {"format": fmt, **params})
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith(
        "text/csv" if fmt == "csv" else "application/x-ndjson"
    )
    return b"".join(response.streaming_content)


def check_with_the_script(tmp_path: Path, body: bytes, fmt: str, *anchor: str):
    """The independent script of docs/audit.md, run as a tenant would run it."""
    path = tmp_path / f"audit-events.{fmt}"
    path.write_bytes(body)
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(path), *anchor],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextmanager
def trigger_disabled() -> Iterator:
    """The schema owner's raw SQL with the append-only trigger off: what only a DBA can do."""
    with connection.schema_owner(), connection.cursor() as cursor:
        # The test's rows are not committed: their deferred foreign-key checks must run before
        # the table can be altered.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f"ALTER TABLE tenants_auditevent DISABLE TRIGGER {TRIGGER}")
        try:
            yield cursor
        finally:
            cursor.execute(f"ALTER TABLE tenants_auditevent ENABLE TRIGGER {TRIGGER}")
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")


@pytest.fixture
def owner_client(tenant) -> APIClient:
    return client_for(owner_of(tenant), tenant)


# --- the chain ---------------------------------------------------------------------------------


def test_writes_through_the_api_form_one_chain_that_verifies(tenant, owner_client):
    for n in range(3):
        create_role(owner_client, f"chained {n}")

    listed = owner_client.get(EVENTS).json()["results"]
    oldest_first = list(reversed(listed))
    assert [event["action"] for event in oldest_first] == [
        "tenants.tenant.created",
        *["tenants.role.created"] * 3,
    ]
    # Each event names the one before; the first, the genesis.
    assert oldest_first[0]["prev_hash"] == GENESIS
    for before, after in itertools.pairwise(oldest_first):
        assert after["prev_hash"] == before["hash"]
    assert all(len(event["hash"]) == 64 for event in oldest_first)

    response = owner_client.get(VERIFY)

    assert response.status_code == 200
    assert response.json() == {"valid": True, "events": 4, "head": oldest_first[-1]["hash"]}


def test_an_ipv4_client_seen_through_an_ipv6_socket_is_recorded_as_ipv4_and_verifies(
    tenant, owner_client
):
    # Python spells the mapped form ::ffff:102:304, PostgreSQL ::ffff:1.2.3.4: were it stored
    # as such, the hash computed at write time would not be the one computed over the row.
    response = owner_client.post(
        ROLES,
        {"name": "mapped", "permissions": ["catalog.read"]},
        format="json",
        REMOTE_ADDR="::ffff:1.2.3.4",
    )
    assert response.status_code == 201, response.content

    assert chain_of(tenant)[-1].ip == "1.2.3.4"
    assert owner_client.get(VERIFY).json()["valid"] is True


def test_each_hash_covers_the_events_canonical_json_and_the_previous_hash(tenant):
    event = add_event(tenant, price=["1.00", "2.50"], name=["Crème", "Brûlée"])
    stored = chain_of(tenant)[-1]

    canonical = json.dumps(
        {
            "action": "tests.thing.done",
            "actor_app_id": None,
            "actor_app_label": "",
            "actor_id": None,
            "actor_label": "system",
            "actor_type": "system",
            "changes": {"name": ["Crème", "Brûlée"], "price": ["1.00", "2.50"]},
            "created_at": stored.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "id": str(event.id),
            "ip": None,
            "request_id": "",
            "target_id": "",
            "target_type": "thing",
            "tenant_id": str(tenant.id),
            "user_agent": "",
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    assert stored.hash == hashlib.sha256((canonical + stored.prev_hash).encode()).hexdigest()
    assert stored.prev_hash == chain_of(tenant)[-2].hash


def test_each_tenant_has_its_own_chain(tenant, owner_client):
    other = make_tenant(plan_code="pro")
    add_event(other)
    add_event(tenant)

    assert chain_of(other)[0].prev_hash == GENESIS
    assert chain_of(tenant)[1].prev_hash == chain_of(tenant)[0].hash
    assert owner_client.get(VERIFY).json()["events"] == 2


# --- tampering ---------------------------------------------------------------------------------


def test_an_event_altered_with_raw_sql_is_found_by_verify(tenant, owner_client):
    for n in range(3):
        add_event(tenant, n=[None, n])
    altered = chain_of(tenant)[2]

    with trigger_disabled() as cursor:
        cursor.execute(
            "UPDATE tenants_auditevent SET changes = %s WHERE id = %s",
            [json.dumps({"n": [None, 99]}), str(altered.id)],
        )

    body = owner_client.get(VERIFY).json()
    assert body == {"valid": False, "events": 3, "broken_at": str(altered.id), "reason": "hash"}


def test_an_event_removed_or_the_tail_cut_is_found_by_verify(tenant, owner_client):
    for n in range(4):
        add_event(tenant, n=[None, n])
    chain = chain_of(tenant)

    with trigger_disabled() as cursor:
        cursor.execute("DELETE FROM tenants_auditevent WHERE id = %s", [str(chain[2].id)])
    assert owner_client.get(VERIFY).json() == {
        "valid": False,
        "events": 3,
        "broken_at": str(chain[3].id),
        "reason": "prev_hash",
    }

    with trigger_disabled() as cursor:
        cursor.execute(
            "DELETE FROM tenants_auditevent WHERE id = ANY(%s)",
            [[str(chain[3].id), str(chain[4].id)]],
        )
    # What is left links up, but the head row remembers an event that is gone.
    assert owner_client.get(VERIFY).json() == {
        "valid": False,
        "events": 2,
        "broken_at": str(chain[4].id),
        "reason": "head",
    }


def test_verify_reads_in_chunks_not_per_event(tenant, owner_client, django_assert_max_num_queries):
    big = make_tenant(plan_code="pro")
    big_client = client_for(owner_of(big), big)
    for n in range(60):
        add_event(big, n=[None, n])
    owner_client.get(VERIFY)  # both clients' credentials looked up once, as later requests are
    big_client.get(VERIFY)

    with CaptureQueriesContext(connection) as small:
        assert owner_client.get(VERIFY).json()["events"] == 1
    with django_assert_max_num_queries(len(small)):
        assert big_client.get(VERIFY).json()["events"] == 61

    # A chunk far smaller than the chain: the same queries, the rows fetched chunk by chunk.
    with (
        tenant_context(big.id),
        django_assert_max_num_queries(4),
    ):
        assert audit_chain.verify(tenant_id=big.id, chunk_size=7).events == 61


# --- concurrent writers --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_on_their_own_connections_leave_one_chain(tenant):
    writers = 6
    start = threading.Barrier(writers)

    def write(n: int) -> None:
        try:
            with tenant_context(tenant.id), transaction.atomic():
                start.wait(timeout=30)
                for step in range(3):
                    audit.record(
                        tenant_id=tenant.id,
                        action="tests.thing.done",
                        target_type="thing",
                        changes={"writer": [None, n], "step": [None, step]},
                    )
        finally:
            connections.close_all()

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(write, range(writers)))

    chain = chain_of(tenant)
    assert len(chain) == 1 + writers * 3
    assert [event.prev_hash for event in chain] == [GENESIS, *(e.hash for e in chain[:-1])]
    with tenant_context(tenant.id):
        assert audit_chain.verify(tenant_id=tenant.id).valid


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_through_two_gunicorn_workers_leave_one_chain(tenant, tmp_path):
    server = start_live_wsgi_server(tmp_path, server_environment(), workers=2)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            signed_in = http.post(
                f"{API}/auth/token/",
                json={
                    "email": owner_of(tenant).email,
                    "password": DEFAULT_PASSWORD,
                    "tenant": tenant.slug,
                },
            )
            assert signed_in.status_code == 200, signed_in.text
            headers = {"Authorization": f"Bearer {signed_in.json()['access']}"}

            def create(n: int) -> int:
                body = {"name": f"concurrent {n}", "permissions": ["catalog.read"]}
                return http.post(ROLES, json=body, headers=headers).status_code

            with ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(create, range(24)))
            verified = http.get(VERIFY, headers=headers).json()
    finally:
        server.stop()

    assert statuses == [201] * 24
    assert verified["valid"] is True
    assert verified["events"] == 25
    assert verified["head"] == chain_of(tenant)[-1].hash


# --- the export and the independent script -------------------------------------------------------


def test_the_export_rechecks_with_the_independent_script(tenant, owner_client, tmp_path):
    create_role(owner_client, "exported")
    add_event(tenant, note=[None, 'naïve, with "quotes", a comma\nand a line'])
    other = make_tenant(name="Secretive", plan_code="pro")
    foreign = add_event(other, secret=[None, "of another tenant"])

    ndjson = exported(owner_client, "ndjson")
    csv_body = exported(owner_client, "csv")

    lines = [json.loads(line) for line in ndjson.splitlines()]
    assert [line["id"] for line in lines] == [str(event.id) for event in chain_of(tenant)]
    assert {line["tenant_id"] for line in lines} == {str(tenant.id)}
    for body in (ndjson, csv_body):
        assert str(foreign.id).encode() not in body
        assert str(other.id).encode() not in body
    ndjson_result = check_with_the_script(tmp_path, ndjson, "ndjson")
    assert ndjson_result.returncode == 0, ndjson_result.stderr
    assert ndjson_result.stdout.strip() == f"valid: 3 events, head {lines[-1]['hash']}"
    csv_result = check_with_the_script(tmp_path, csv_body, "csv")
    assert csv_result.returncode == 0, csv_result.stderr
    assert csv_result.stdout == ndjson_result.stdout

    # And the script is no rubber stamp: one character changed, and it says where.
    forged = ndjson.replace(b'"exported"', b'"exporteD"', 1)
    forged_result = check_with_the_script(tmp_path, forged, "ndjson")
    assert forged_result.returncode == 1
    assert f"broken at event {lines[1]['id']}" in forged_result.stderr


def test_the_script_in_the_docs_is_the_one_tested():
    assert SCRIPT.read_text() in DOCS.read_text()


def test_the_export_takes_a_time_range(tenant, owner_client, tmp_path):
    for n in range(3):
        add_event(tenant, n=[None, n])
    chain = chain_of(tenant)
    since, until = chain[1].created_at, chain[3].created_at

    body = exported(owner_client, "ndjson", since=since.isoformat(), until=until.isoformat())

    lines = [json.loads(line) for line in body.splitlines()]
    assert [line["id"] for line in lines] == [str(chain[1].id), str(chain[2].id)]
    # A slice checks from its first event's link, known from what came before it.
    result = check_with_the_script(tmp_path, body, "ndjson", chain[0].hash)
    assert result.returncode == 0, result.stderr
    bad_range = owner_client.get(EXPORT, {"since": until.isoformat(), "until": since.isoformat()})
    assert_problem(bad_range, 400, "validation-error")


def test_verify_and_export_need_audit_read(tenant):
    viewer = client_for(make_member(tenant, roles=["viewer"]).user, tenant)

    assert_problem(viewer.get(VERIFY), 403, "permission-denied")
    assert_problem(viewer.get(EXPORT), 403, "permission-denied")
    assert_problem(viewer.get(EXPORT, {"format": "csv"}), 403, "permission-denied")
    assert_problem(APIClient().get(VERIFY), 401, "not-authenticated")
    assert_problem(APIClient().get(EXPORT), 401, "not-authenticated")


def test_a_tenant_verifies_and_exports_its_own_chain_only(tenant, owner_client):
    other = make_tenant(plan_code="pro")
    other_client = client_for(owner_of(other), other)
    for n in range(5):
        add_event(other, n=[None, n])
    broken = chain_of(other)[3]
    with trigger_disabled() as cursor:
        cursor.execute(
            "UPDATE tenants_auditevent SET action = 'tests.thing.undone' WHERE id = %s",
            [str(broken.id)],
        )

    # The other tenant's broken chain is not ours: ours verifies, theirs does not.
    assert owner_client.get(VERIFY).json()["valid"] is True
    assert owner_client.get(VERIFY).json()["events"] == 1
    assert other_client.get(VERIFY).json()["broken_at"] == str(broken.id)
    assert str(broken.id).encode() not in exported(owner_client, "ndjson")


# --- the beat job --------------------------------------------------------------------------------


def test_the_beat_job_logs_and_counts_a_break(tenant):
    add_event(tenant)
    assert audit_chain_verify_task() == 0  # and it remembers how far it got
    later = [add_event(tenant, n=[None, n]) for n in range(3)]
    with trigger_disabled() as cursor:
        cursor.execute(
            "UPDATE tenants_auditevent SET target_id = 'forged' WHERE id = %s", [str(later[1].id)]
        )
    before = REGISTRY.get_sample_value("tenantapi_audit_chain_breaks_total") or 0

    with captured_logs() as logs:
        breaks = audit_chain_verify_task()

    assert breaks == 1
    line = logs.one(event="audit_chain_broken")
    assert line["level"] == "error"
    assert (line["tenant_id"], line["event_id"]) == (str(tenant.id), str(later[1].id))
    assert REGISTRY.get_sample_value("tenantapi_audit_chain_breaks_total") == before + 1


# --- pruning -------------------------------------------------------------------------------------


def test_pruning_anchors_the_chain_so_that_it_still_verifies(tmp_path):
    with operator_scope("test setup: a tenant with old events"), transaction.atomic():
        # Keeping its events a week, the shortest retention there is (kernel/retention.py).
        tenant = Tenant.objects.create(
            name="Old",
            slug=f"old-{timezone.now():%H%M%S%f}",
            plan=Plan.objects.get(code="pro"),
            audit_retention_days=7,
        )
        now = timezone.now()
        # Dated in the past as they are appended: the chain of a tenant with a long history.
        old = [
            audit_chain.append(
                AuditEvent(
                    tenant_id=tenant.id,
                    actor_type=AuditEvent.ActorType.SYSTEM,
                    actor_label="system",
                    action="tests.thing.done",
                    target_type="thing",
                    created_at=now - timedelta(days=days),
                )
            )
            for days in (10, 9, 8)
        ]
    recent = add_event(tenant)

    assert audit.prune() >= 3

    chain = chain_of(tenant)
    assert [event.id for event in chain] == [recent.id, chain[1].id]
    anchor_event = chain[1]
    assert anchor_event.action == "tenants.audit.pruned"
    assert anchor_event.target_id == str(old[-1].id)
    assert anchor_event.changes["anchor"] == [GENESIS, old[-1].hash]
    with operator_scope("test: the head row"):
        head = AuditChainHead.objects.get(tenant=tenant)
    assert (head.anchor_event_id, head.anchor_hash) == (old[-1].id, old[-1].hash)
    # The first event left links to the last one pruned, not to the genesis: only the anchor
    # lets the chain verify.
    assert chain[0].prev_hash == old[-1].hash
    with tenant_context(tenant.id):
        verified = audit_chain.verify(tenant_id=tenant.id)
        body = b"".join(audit_chain.export_stream(fmt="ndjson"))
    assert verified.as_dict() == {"valid": True, "events": 2, "head": chain[-1].hash}
    assert check_with_the_script(tmp_path, body, "ndjson", old[-1].hash).returncode == 0
    assert check_with_the_script(tmp_path, body, "ndjson").returncode == 1

    # A second prune with nothing more to delete moves nothing and records nothing.
    audit.prune()
    assert len(chain_of(tenant)) == 2


# --- the migration -------------------------------------------------------------------------------


def test_the_migration_chains_the_events_written_before_it(tenant, owner_client):
    migration = importlib.import_module("kernel.tenancy.migrations.0010_audit_hash_chain")
    for n in range(3):
        add_event(tenant, n=[None, n], name=[None, "Zoë"])
    expected = [(event.prev_hash, event.hash) for event in chain_of(tenant)]
    # As the log was before the migration: no hashes, no head row.
    with trigger_disabled() as cursor:
        cursor.execute("UPDATE tenants_auditevent SET prev_hash = '', hash = ''")
        cursor.execute("DELETE FROM tenants_auditchainhead")
    assert owner_client.get(VERIFY).json()["valid"] is False

    with operator_scope("test: the migration"), connection.schema_owner():
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # as in trigger_disabled()
        migration.backfill(apps, SimpleNamespace(connection=connection))

    assert [(event.prev_hash, event.hash) for event in chain_of(tenant)] == expected
    assert owner_client.get(VERIFY).json() == {
        "valid": True,
        "events": 4,
        "head": expected[-1][1],
    }
    # The definition frozen in the migration is the application's.
    assert migration.CANONICAL_FIELDS == audit_chain.CANONICAL_FIELDS


@pytest.mark.django_db(transaction=True)
def test_an_audited_write_does_not_wait_behind_a_quota_check_of_its_tenant():
    """A quota check locks the tenant's row until its transaction ends; an audited write locks
    the chain head, then inserts an event that references the tenant. Were the quota's lock one
    that key-share locks wait for, the write would wait for the quota holder while holding the
    head, and the quota holder's own event would wait for the head: a deadlock (503)."""
    tenant = make_tenant()
    holding, release = threading.Event(), threading.Event()
    outcomes: dict[str, object] = {}

    def check_the_quota_then_record() -> None:
        try:
            with transaction.atomic():
                enforce_quota(tenant=tenant, resource=Resource.API_KEYS, count=lambda: 0)
                holding.set()
                release.wait(timeout=60)
                with tenant_context(tenant.id):
                    audit.record(tenant_id=tenant.id, action="tests.thing.done", target_type="t")
            outcomes["quota"] = "committed"
        except Exception as exc:
            outcomes["quota"] = exc
        finally:
            connections.close_all()

    def record() -> None:
        try:
            with tenant_context(tenant.id), transaction.atomic():
                audit.record(tenant_id=tenant.id, action="tests.thing.done", target_type="t")
            outcomes["record"] = "committed"
        except Exception as exc:
            outcomes["record"] = exc
        finally:
            connections.close_all()

    quota = threading.Thread(target=check_the_quota_then_record)
    quota.start()
    assert holding.wait(timeout=30)
    writer = threading.Thread(target=record)
    writer.start()
    writer.join(timeout=30)  # it need not wait for the quota holder: it commits at once
    release.set()
    quota.join(timeout=30)
    writer.join(timeout=30)

    assert outcomes == {"record": "committed", "quota": "committed"}
    with tenant_context(tenant.id):
        assert audit_chain.verify(tenant_id=tenant.id).valid
