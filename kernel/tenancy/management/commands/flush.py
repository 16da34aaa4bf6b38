"""`flush`, run as the schema owner: TRUNCATE is a right the restricted role must not hold."""

from django.core.management.commands.flush import Command as DjangoFlushCommand
from django.db import connections


class Command(DjangoFlushCommand):
    def handle(self, *args, **options):
        connection = connections[options["database"]]
        if not hasattr(connection, "schema_owner"):
            return super().handle(*args, **options)
        with connection.schema_owner():
            return super().handle(*args, **options)
