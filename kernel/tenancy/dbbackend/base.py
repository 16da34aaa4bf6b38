"""PostgreSQL backend that runs every application query under row-level security.

Every transaction starts with one statement that sets, for that transaction only
(`set_config(..., true)`, which is `SET LOCAL`):

- the role: the restricted `DATABASE_APP_ROLE` (Django's `assume_role` option), neither
  superuser nor BYPASSRLS, so row security applies even when DATABASE_URL names a superuser;
- the current scope (kernel.context), in `app.tenant_id` and `app.operator_scope`, which the
  row-level security policies read.

All three die with the transaction. A pooler in transaction mode (PgBouncer) hands the server
connection to someone else between two transactions, and a role set once per connection would
stay behind on one server connection while this client's next transaction ran on another, as the
login role: so nothing here is per connection. A statement run outside a transaction is wrapped in
one, so that it runs as the role too; with no scope, every tenant-owned table looks empty. Only
the schema owner's own work (migrate, flush) runs as the login role, inside `schema_owner()`.

A connection refuses to be used when the role its transactions run as is a superuser or BYPASSRLS
(row security would not apply), unless `DATABASE_ALLOW_PRIVILEGED_ROLE` says this is a machine
where that is meant (`PrivilegedDatabaseRole`).
"""

from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.backends.base.base import NO_DB_ALIAS
from django_prometheus.db.backends.postgresql.base import DatabaseWrapper as PrometheusPostgres

from kernel.context import Scope, current_scope

# Never equal to a scope: forces the next statement to apply the current one.
_UNKNOWN = Scope(reason="unknown")
# Nothing applied in the open transaction yet (not even the role).
_NOTHING = Scope(reason="nothing applied")

APPLY_SCOPE_SQL = (
    "SELECT set_config('role', %s, true), set_config('app.tenant_id', %s, true),"
    " set_config('app.operator_scope', %s, true)"
)
APPLY_SCOPE_WITHOUT_ROLE_SQL = (
    "SELECT set_config('app.tenant_id', %s, true), set_config('app.operator_scope', %s, true)"
)
PRIVILEGED_ROLE_SQL = (
    "SELECT rolname, rolsuper OR rolbypassrls FROM pg_roles"
    " WHERE rolname = COALESCE(NULLIF(%s, ''), current_user)"
)


class PrivilegedDatabaseRole(ImproperlyConfigured):
    """The application's queries would run as a superuser or a BYPASSRLS role."""


class DatabaseWrapper(PrometheusPostgres):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.as_schema_owner = False
        # True while Django runs its own SAVEPOINT / RELEASE / ROLLBACK TO statements.
        self._in_savepoint_statement = False
        # The scope whose settings the open transaction carries (`_NOTHING`: none yet).
        self._applied_scope: Scope | None = _NOTHING
        self.execute_wrappers.append(self._run_in_scope)

    # --- the restricted role -----------------------------------------------------------------
    @property
    def app_role(self) -> str:
        return self.settings_dict["OPTIONS"].get("assume_role") or ""

    def _configure_role(self, connection):
        # Django's `assume_role` would SET ROLE for the whole session: the role is set per
        # transaction instead (APPLY_SCOPE_SQL). What is checked once per connection is that the
        # role transactions run as is no superuser nor BYPASSRLS. Not for the no-database alias,
        # which only creates and drops test databases, nor the schema owner's own commands.
        if self.alias == NO_DB_ALIAS or self.as_schema_owner:
            return False
        # On the raw connection we are given: a cursor of this wrapper would, under the pool, ask
        # the pool for a second connection from inside the pool's configure callback.
        with connection.cursor() as cursor:
            cursor.execute(PRIVILEGED_ROLE_SQL, [self.app_role])
            found = cursor.fetchone()
        if found is not None and found[1] and not settings.DATABASE_ALLOW_PRIVILEGED_ROLE:
            raise PrivilegedDatabaseRole(
                f"The application's database role {found[0]!r} is a superuser or BYPASSRLS: "
                "row-level security would not apply to it. Set DATABASE_APP_ROLE to a plain "
                "role (manage.py migrate makes it), or DATABASE_ALLOW_PRIVILEGED_ROLE=true on "
                "a development machine."
            )
        return False

    @contextmanager
    def schema_owner(self) -> Iterator[None]:
        """Run as the login role (the schema owner) for migrations and test flushes."""
        self.as_schema_owner = True
        if self.connection is not None:
            # Inside a transaction that set the restricted role: back to the login role.
            with self.connection.cursor() as cursor:
                cursor.execute("RESET ROLE")
        try:
            yield
        finally:
            self.as_schema_owner = False
            # What the open transaction carries is unknown now: the next statement applies the
            # role and the scope again.
            self._applied_scope = _UNKNOWN

    # --- the transaction-local scope -----------------------------------------------------------
    def _set_autocommit(self, autocommit):
        super()._set_autocommit(autocommit)
        # Entering or leaving a transaction: whatever was applied is gone either way.
        self._applied_scope = _NOTHING
        wanted = _wanted_scope()
        if not autocommit and wanted is not None and not self.as_schema_owner:
            # Apply it first thing, before any savepoint whose rollback would undo it. With no
            # scope yet (a request authenticates inside its transaction), the first statement
            # applies the role and whatever scope there is by then: one statement, not two.
            self._apply_scope(wanted)

    # Savepoint statements carry no data, so they never apply the scope: after an error in a
    # nested block the transaction accepts nothing but the ROLLBACK TO that follows.
    @contextmanager
    def _savepoint_statement(self) -> Iterator[None]:
        self._in_savepoint_statement = True
        try:
            yield
        finally:
            self._in_savepoint_statement = False

    def _savepoint(self, sid):
        with self._savepoint_statement():
            super()._savepoint(sid)

    def _savepoint_commit(self, sid):
        with self._savepoint_statement():
            super()._savepoint_commit(sid)

    def _savepoint_rollback(self, sid):
        with self._savepoint_statement():
            super()._savepoint_rollback(sid)
        # Rolling back to a savepoint also undoes a set_config made after it: the applied
        # scope is unknown now, so the next statement applies it afresh.
        self._applied_scope = _UNKNOWN

    def _commit(self):
        self._applied_scope = _NOTHING
        return super()._commit()

    def _rollback(self):
        self._applied_scope = _NOTHING
        return super()._rollback()

    def _apply_scope(self, scope: Scope | None) -> None:
        tenant_id = str(scope.tenant_id) if scope and scope.tenant_id else ""
        operator = "on" if scope and scope.operator else ""
        with self.connection.cursor() as cursor:
            if self.app_role:
                cursor.execute(APPLY_SCOPE_SQL, [self.app_role, tenant_id, operator])
            else:
                cursor.execute(APPLY_SCOPE_WITHOUT_ROLE_SQL, [tenant_id, operator])
        self._applied_scope = scope

    def _run_in_scope(self, execute, sql, params, many, context):
        wanted = _wanted_scope()
        if (
            self.as_schema_owner
            or self._in_savepoint_statement
            or wanted == self._applied_scope
            # The no-database alias only creates and drops databases, which no transaction holds.
            or self.alias == NO_DB_ALIAS
        ):
            return execute(sql, params, many, context)
        if self.get_autocommit():
            # A lone statement: give it a transaction of its own to carry the role and the scope.
            with transaction.atomic(using=self.alias):
                if self._applied_scope != wanted:
                    self._apply_scope(wanted)
                return execute(sql, params, many, context)
        # The scope changed inside a transaction (entered, left or switched): follow it.
        self._apply_scope(wanted)
        return execute(sql, params, many, context)


def _wanted_scope() -> Scope | None:
    scope = current_scope()
    return scope if scope.tenant_id is not None or scope.operator else None
