"""`migrate`, run as the schema owner, then row-level security brought up to date."""

from django.core.management.commands.migrate import Command as DjangoMigrateCommand
from django.db import connections

from kernel.tenancy.rls import apply_row_level_security


class Command(DjangoMigrateCommand):
    def handle(self, *args, **options):
        connection = connections[options["database"]]
        if not hasattr(connection, "schema_owner"):  # SQLite: no roles, no row security.
            return super().handle(*args, **options)
        with connection.schema_owner():
            super().handle(*args, **options)
            apply_row_level_security(connection)
            if options["verbosity"] >= 1:
                self.stdout.write("Row-level security applied to every tenant-owned table.")
