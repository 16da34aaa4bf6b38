"""PostgreSQL backend that runs every connection under row-level security (filled in by issue 3)."""

from django.db.backends.postgresql.base import DatabaseWrapper as PostgresDatabaseWrapper


class DatabaseWrapper(PostgresDatabaseWrapper):
    pass
