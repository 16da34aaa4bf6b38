"""Named locks held until the transaction ends, for work that must take turns with no row to lock.

PostgreSQL advisory locks, keyed by a 64-bit hash of the name: `lock_for_transaction` waits
until no other transaction holds the name and keeps it until the current one commits or rolls
back. On SQLite (the embedded default: one process, tasks run inline) it does nothing.
"""

from django.db import connection


def lock_for_transaction(name: str) -> None:
    """Hold the lock `name` until the current transaction ends; must run inside one."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [name])
