"""`graphql_schema [--output PATH | --check PATH]`: the GraphQL schema as SDL.

Without an option it prints the SDL; `--output` writes it to a file (the committed copy is
graphql_api/schema.graphql); `--check` compares a file with it and fails when they differ, so
that CI catches a schema change nobody regenerated.
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

REGENERATE = "python manage.py graphql_schema --output graphql_api/schema.graphql"


class Command(BaseCommand):
    help = (
        "Print the GraphQL schema as SDL; --output PATH writes it, --check PATH fails when the "
        "file differs from it."
    )

    def add_arguments(self, parser):
        target = parser.add_mutually_exclusive_group()
        target.add_argument("--output", metavar="PATH", help="Write the SDL to PATH.")
        target.add_argument(
            "--check",
            metavar="PATH",
            help="Fail (exit status 1) when PATH does not hold the current SDL.",
        )

    def handle(self, *args, output: str | None, check: str | None, **options):
        # Imported here: the schema is built from every feature's types, once the apps are ready.
        from graphql_api.schema import sdl as schema_sdl

        sdl = schema_sdl()
        if check is not None:
            self._check(Path(check), sdl)
        elif output is not None:
            Path(output).write_text(sdl, encoding="utf-8")
            self.stderr.write(f"Wrote the GraphQL schema to {output}.")
        else:
            self.stdout.write(sdl, ending="")

    def _check(self, path: Path, sdl: str) -> None:
        try:
            committed = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise CommandError(f"{path} does not exist. Generate it: {REGENERATE}") from exc
        if committed != sdl:
            raise CommandError(
                f"{path} differs from the current GraphQL schema. Regenerate it: {REGENERATE}"
            )
        self.stderr.write(f"{path} is up to date.")
