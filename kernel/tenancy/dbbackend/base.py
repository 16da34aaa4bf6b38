"""PostgreSQL backend that runs every application query under row-level security.

Two things happen here, both invisible to the code that queries:

1. Every connection switches to the restricted role `DATABASE_APP_ROLE` (Django's `assume_role`,
   which also covers pooled connections), a role that is neither superuser nor BYPASSRLS. So row
   security applies even when DATABASE_URL names a superuser. Only the schema owner's own work
   (migrate, flush) runs without it, inside `schema_owner()`.

2. Every transaction carries the current scope (kernel.context) in two transaction-local
   settings, `app.tenant_id` and `app.operator_scope`, which the row-level security policies
   read. They are set with `set_config(..., true)`, so they die with the transaction: nothing
   lingers on a connection that a pooler (PgBouncer in transaction mode) hands to someone else.
   A statement run outside a transaction while a scope is held is wrapped in one, so the setting
   applies to it too; with no scope, nothing is set and every tenant-owned table looks empty.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import transaction
from django.db.backends.base.base import NO_DB_ALIAS
from django_prometheus.db.backends.postgresql.base import DatabaseWrapper as PrometheusPostgres
from psycopg import sql

from kernel.context import Scope, current_scope

# Never equal to a scope: forces the next statement to apply the current one.
_UNKNOWN = Scope(reason="unknown")

APPLY_SCOPE_SQL = (
    "SELECT set_config('app.tenant_id', %s, true), set_config('app.operator_scope', %s, true)"
)


class DatabaseWrapper(PrometheusPostgres):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.as_schema_owner = False
        # True while Django runs its own SAVEPOINT / RELEASE / ROLLBACK TO statements.
        self._in_savepoint_statement = False
        # The scope whose settings the open transaction carries; None when none was applied.
        self._applied_scope: Scope | None = None
        self.execute_wrappers.append(self._run_in_scope)

    # --- the restricted role -----------------------------------------------------------------
    def _configure_role(self, connection):
        # The no-database alias only creates and drops test databases; the schema owner's own
        # commands need the owner's rights.
        role = self.settings_dict["OPTIONS"].get("assume_role")
        if not role or self.alias == NO_DB_ALIAS or self.as_schema_owner:
            return False
        # On the raw connection we are given: Django's own version composes the statement through
        # a cursor of this wrapper, which under the pool asks the pool for a second connection
        # from inside the pool's configure callback, and waits for itself.
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        return True

    @contextmanager
    def schema_owner(self) -> Iterator[None]:
        """Run as the login role (the schema owner) for migrations and test flushes."""
        self.as_schema_owner = True
        if self.connection is not None:
            with self.connection.cursor() as cursor:
                cursor.execute("RESET ROLE")
        try:
            yield
        finally:
            self.as_schema_owner = False
            if self.connection is not None:
                self._configure_role(self.connection)

    # --- the transaction-local scope -----------------------------------------------------------
    def _set_autocommit(self, autocommit):
        super()._set_autocommit(autocommit)
        # Entering or leaving a transaction: whatever was applied is gone either way.
        self._applied_scope = None
        if not autocommit and (wanted := _wanted_scope()) is not None:
            # Apply it first thing, before any savepoint whose rollback would undo it.
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
        self._applied_scope = None
        return super()._commit()

    def _rollback(self):
        self._applied_scope = None
        return super()._rollback()

    def _apply_scope(self, scope: Scope | None) -> None:
        tenant_id = str(scope.tenant_id) if scope and scope.tenant_id else ""
        operator = "on" if scope and scope.operator else ""
        with self.connection.cursor() as cursor:
            cursor.execute(APPLY_SCOPE_SQL, [tenant_id, operator])
        self._applied_scope = scope

    def _run_in_scope(self, execute, sql, params, many, context):
        wanted = _wanted_scope()
        if self.as_schema_owner or self._in_savepoint_statement or wanted == self._applied_scope:
            return execute(sql, params, many, context)
        if self.get_autocommit():
            if wanted is None:  # settings of earlier transactions died with them
                return execute(sql, params, many, context)
            # A lone statement: give it a transaction of its own to carry the setting.
            with transaction.atomic(using=self.alias):
                return execute(sql, params, many, context)
        # The scope changed inside a transaction (entered, left or switched): follow it.
        self._apply_scope(wanted)
        return execute(sql, params, many, context)


def _wanted_scope() -> Scope | None:
    scope = current_scope()
    return scope if scope.tenant_id is not None or scope.operator else None
