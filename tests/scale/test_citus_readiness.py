"""What a distributed PostgreSQL (Citus) would require of our schema, proven on the real one.

Distributing by tenant (docs/scale-out.md, "Citus: the distribution plan") makes every
tenant-owned table a distributed table with `tenant_id` as its distribution column, and the
tables that belong to no tenant either reference tables (copied to every node) or local tables
(kept on the coordinator). Citus then holds the schema to rules that plain PostgreSQL does not:

- a unique index, unique constraint, primary key or exclusion constraint of a distributed table
  must include the distribution column (uniqueness is enforced shard by shard);
- a foreign key between distributed tables must join them on the distribution column (both are
  then co-located: a tenant's rows of both live in one shard group);
- a distributed table may point at a reference table, never at a local one; a reference table
  may point at reference tables only; a local table at anything but a distributed table.

These tests check the database itself (pg_catalog), table by table, so that a new table, a new
uniqueness or a new foreign key that would break the plan fails here, however it was created.
What cannot comply today is listed below with its reason, and the document says what the move
to Citus does about it. Every table must be classified: a new table forces a decision.
"""

from dataclasses import dataclass
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.db import connection

from kernel.tenancy.rls import tenant_owned_tables

pytestmark = pytest.mark.django_db

DISTRIBUTION_COLUMN = "tenant_id"
DOCS = Path(settings.BASE_DIR) / "docs" / "scale-out.md"
SECTION = "## Citus: the distribution plan"

# Global tables that distributed tables point at or join, and whatever those point at: copied to
# every node.
REFERENCE_TABLES = {
    "tenants_tenant": "every tenant-owned table's tenant_id points at it",
    "tenants_plan": "a tenant's plan: tenants_tenant, a reference table, points at it",
    "tenants_permission": "the permission codes: static and small, read beside roles",
    "accounts_user": "people are global; memberships, invitations, API keys, consents, SSO "
    "identities and notifications point at them",
    "oauth_app": "found by client_id before any tenant is known; consents and "
    "django-oauth-toolkit's tokens point at it",
    "oauth2_provider_accesstoken": "found by its checksum before any tenant is known; "
    "oauth_issuedtoken (distributed) points at it",
    "oauth2_provider_refreshtoken": "an access token points at the refresh token it came from",
    "oauth2_provider_idtoken": "an access token points at its ID token",
}

# Global tables that no distributed table points at, used by the coordinator alone.
LOCAL_TABLES = {
    "tenants_platformauditevent": "the platform's audit log: no tenant's rows, never joined",
    "django_session": "browser sessions (the admin, the OAuth pages), by session key",
    "django_admin_log": "the admin's record of operators' changes",
    "django_content_type": "Django's registry of models",
    "django_migrations": "Django's record of applied migrations",
    "auth_permission": "Django's model permissions, for operators in the admin",
    "auth_group": "Django's groups, for operators in the admin",
    "auth_group_permissions": "Django's groups, for operators in the admin",
    "accounts_user_groups": "Django's groups, for operators in the admin",
    "accounts_user_user_permissions": "Django's model permissions, for operators in the admin",
    "accounts_totpdevice": "a person's second factor: global, read at sign-in",
    "accounts_recoverycode": "a person's recovery codes: global, read at sign-in",
    "oauth2_provider_grant": "authorization codes: minutes long, read by the token endpoint",
    "oauth2_provider_devicegrant": "device codes, the same",
    "token_blacklist_outstandingtoken": "refresh tokens issued to people, by jti: global",
    "token_blacklist_blacklistedtoken": "refresh tokens revoked, by jti: global",
}

# Uniqueness of a distributed table that leaves out tenant_id, and why, by (table, columns).
# docs/scale-out.md says what each becomes when the table is distributed.
UNIQUE_WITHOUT_TENANT = {
    ("oauth_tokenfamily", ("code_checksum",)): (
        "the token endpoint finds a family by its code before any tenant is known; the code "
        "is one of django-oauth-toolkit's, random and unique among all tenants' codes"
    ),
}


@dataclass(frozen=True)
class Uniqueness:
    table: str
    name: str
    kind: str  # "primary key", "unique constraint", "unique index" or "exclusion constraint"
    columns: tuple[str | None, ...]  # None for an expression

    def __str__(self) -> str:
        shown = ", ".join(column or "(expression)" for column in self.columns)
        if not self.columns and self.kind == "exclusion constraint":
            shown = "no column compared with ="
        return f"{self.table}: {self.kind} {self.name} ({shown})"


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: str
    columns: tuple[str, ...]
    target: str
    target_columns: tuple[str, ...]

    def __str__(self) -> str:
        return (
            f"{self.name}: {self.table} ({', '.join(self.columns)}) -> "
            f"{self.target} ({', '.join(self.target_columns)})"
        )


# Key columns only (not INCLUDE ones); an exclusion constraint's columns are those it compares
# with `=`, the only ones that make rows of different tenants unable to conflict.
UNIQUENESS_SQL = """
SELECT t.relname,
       coalesce(c.conname, i.relname),
       CASE c.contype WHEN 'p' THEN 'primary key' WHEN 'u' THEN 'unique constraint'
                      ELSE 'unique index' END,
       ARRAY(SELECT a.attname::text
             FROM unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, position)
             LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
             WHERE k.position <= x.indnkeyatts ORDER BY k.position)
FROM pg_index x
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
LEFT JOIN pg_constraint c
       ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid AND c.contype IN ('p', 'u')
WHERE n.nspname = 'public' AND x.indisunique
UNION ALL
SELECT t.relname, c.conname, 'exclusion constraint',
       ARRAY(SELECT a.attname::text
             FROM unnest(c.conkey, c.conexclop) WITH ORDINALITY AS k(attnum, op, position)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
             JOIN pg_operator o ON o.oid = k.op
             WHERE o.oprname = '=' ORDER BY k.position)
FROM pg_constraint c
JOIN pg_class t ON t.oid = c.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = 'public' AND c.contype = 'x'
"""

FOREIGN_KEYS_SQL = """
SELECT c.conname, src.relname,
       ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, position)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
             ORDER BY k.position),
       dst.relname,
       ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, position)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum
             ORDER BY k.position)
FROM pg_constraint c
JOIN pg_class src ON src.oid = c.conrelid
JOIN pg_class dst ON dst.oid = c.confrelid
JOIN pg_namespace n ON n.oid = src.relnamespace
WHERE n.nspname = 'public' AND c.contype = 'f'
"""


def database_tables() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
        )
        return {name for (name,) in cursor.fetchall()}


def uniquenesses() -> list[Uniqueness]:
    with connection.cursor() as cursor:
        cursor.execute(UNIQUENESS_SQL)
        return [
            Uniqueness(table, name, kind, tuple(columns))
            for table, name, kind, columns in cursor.fetchall()
        ]


def foreign_keys() -> list[ForeignKey]:
    with connection.cursor() as cursor:
        cursor.execute(FOREIGN_KEYS_SQL)
        return [
            ForeignKey(name, table, tuple(columns), target, tuple(target_columns))
            for name, table, columns, target, target_columns in cursor.fetchall()
        ]


def primary_key_columns() -> dict[str, str]:
    """The column Django takes for each table's primary key (its surrogate key)."""
    return {
        model._meta.db_table: model._meta.pk.column
        for model in apps.get_models(include_auto_created=True)
    }


def joins_on_tenant(key: ForeignKey) -> bool:
    """Whether the key pairs tenant_id with tenant_id: the rows it links are co-located."""
    return any(
        column == target == DISTRIBUTION_COLUMN
        for column, target in zip(key.columns, key.target_columns, strict=True)
    )


# --- every table classified -----------------------------------------------------------------


def test_every_table_is_distributed_reference_or_local():
    distributed = set(tenant_owned_tables())
    reference, local = set(REFERENCE_TABLES), set(LOCAL_TABLES)
    assert not distributed & reference, "tenant-owned tables are distributed, not reference"
    assert not distributed & local, "tenant-owned tables are distributed, not local"
    assert not reference & local

    tables = database_tables()
    unclassified = tables - distributed - reference - local
    assert not unclassified, (
        f"New tables {sorted(unclassified)}: a tenant's data is a TenantOwnedModel (distributed "
        "by tenant_id); anything else goes to REFERENCE_TABLES or LOCAL_TABLES here, with its "
        "reason, and to docs/scale-out.md."
    )
    gone = (distributed | reference | local) - tables
    assert not gone, f"Classified tables that no longer exist: {sorted(gone)}"


def test_every_distributed_table_has_the_same_non_null_distribution_column():
    """Co-location needs one type of distribution column; Citus refuses a row whose is NULL."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, a.attnotnull, format_type(a.atttypid, a.atttypmod)"
            " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND a.attname = %s AND NOT a.attisdropped",
            [DISTRIBUTION_COLUMN],
        )
        columns = {table: (not_null, kind) for table, not_null, kind in cursor.fetchall()}
        cursor.execute(
            "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
            " WHERE a.attrelid = 'tenants_tenant'::regclass AND a.attname = 'id'"
        )
        (tenant_id_type,) = cursor.fetchone()
    for table in tenant_owned_tables():
        assert columns.get(table) == (True, tenant_id_type), table


# --- uniqueness -----------------------------------------------------------------------------


def test_every_uniqueness_of_a_distributed_table_includes_tenant_id():
    """Every unique index and every unique, primary-key or exclusion constraint of a
    tenant-owned table includes tenant_id, but for the primary keys (each the one column Django
    knows as the pk, which the move to Citus widens to (tenant_id, pk)) and the few listed with
    their reason in UNIQUE_WITHOUT_TENANT."""
    distributed = set(tenant_owned_tables())
    pk_columns = primary_key_columns()
    found = [u for u in uniquenesses() if u.table in distributed]
    # The query sees every table's primary key: the check below is not vacuous.
    assert {u.table for u in found if u.kind == "primary key"} == distributed

    without_tenant = [u for u in found if DISTRIBUTION_COLUMN not in u.columns]
    surrogate_keys = [
        u for u in without_tenant if u.kind == "primary key" and u.columns == (pk_columns[u.table],)
    ]
    offending = [
        str(u)
        for u in without_tenant
        if u not in surrogate_keys and (u.table, u.columns) not in UNIQUE_WITHOUT_TENANT
    ]
    assert not offending, (
        "A uniqueness of a tenant-owned table leaves out tenant_id, which Citus could not "
        "enforce once the table is distributed. Make it unique per tenant "
        "(UniqueConstraint(fields=['tenant', ...])), or, if it must hold across tenants, list "
        f"it in UNIQUE_WITHOUT_TENANT with its reason and in docs/scale-out.md: {offending}"
    )
    # The exceptions are still needed: one that was fixed leaves the list.
    listed = {(u.table, u.columns) for u in without_tenant}
    assert set(UNIQUE_WITHOUT_TENANT) <= listed, set(UNIQUE_WITHOUT_TENANT) - listed


def test_a_notification_id_is_unique_per_tenant_not_globally():
    """The one global uniqueness that should not have been (migration notifications 0005)."""
    found = {u.columns: u.kind for u in uniquenesses() if u.table == "notifications_notification"}
    assert found.get(("tenant_id", "id")) == "unique constraint"
    assert ("id",) not in found


# --- foreign keys ---------------------------------------------------------------------------


def test_foreign_keys_respect_what_citus_allows_between_kinds_of_tables():
    distributed = set(tenant_owned_tables())
    reference, local = set(REFERENCE_TABLES), set(LOCAL_TABLES)
    refused = []
    for key in foreign_keys():
        if key.table in distributed and key.target in local:
            refused.append(f"{key}: a distributed table may not point at a local table")
        elif key.table in reference and key.target not in reference:
            refused.append(f"{key}: a reference table may point at reference tables only")
        elif key.table in local and key.target in distributed:
            refused.append(f"{key}: a local table may not point at a distributed table")
    assert not refused, refused


def test_foreign_keys_between_tenant_owned_tables_can_be_co_located():
    """Each joins on tenant_id already (the catalog's same-tenant keys), or is Django's
    single-column key onto the target's pk, which the move to Citus replaces by
    (tenant_id, column) -> (tenant_id, pk) (docs/scale-out.md)."""
    distributed = set(tenant_owned_tables())
    pk_columns = primary_key_columns()
    between = [k for k in foreign_keys() if k.table in distributed and k.target in distributed]
    assert between, "the check below is not vacuous"
    co_located = [k for k in between if joins_on_tenant(k)]
    assert co_located, "catalog/migrations/0002's same-tenant keys"
    single_onto_pk = [
        k for k in between if len(k.columns) == 1 and k.target_columns == (pk_columns[k.target],)
    ]
    other = [str(k) for k in between if k not in co_located and k not in single_onto_pk]
    assert not other, (
        "A foreign key between tenant-owned tables that neither pairs tenant_id with tenant_id "
        f"nor points at the target's primary key cannot be made co-located: {other}"
    )


# --- the document ---------------------------------------------------------------------------


def test_the_document_names_every_table_and_every_exception():
    text = DOCS.read_text()
    assert SECTION in text
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    named = [*tenant_owned_tables(), *REFERENCE_TABLES, *LOCAL_TABLES]
    named += [table for table, _ in UNIQUE_WITHOUT_TENANT]
    missing = sorted({table for table in named if f"`{table}`" not in section})
    assert not missing, f"docs/scale-out.md, {SECTION[3:]!r}, does not name {missing}"
