"""`create_operator --email [--password-stdin]`: a staff superuser, for the Django admin.

The password is never an argument (it would sit in the shell history and the process list): it
is read from the first line of standard input with --password-stdin, or prompted for.

The user is saved through `accounts.services.user_operator_save`, as the admin's forms are: the
creation, or the promotion and a new password, are recorded in the platform's audit log, by the
system.
"""

import getpass
import sys

from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email

from accounts import services


class Command(BaseCommand):
    help = (
        "Create an operator (a staff superuser who uses the Django admin), or make an existing "
        "user one. A new operator needs a password: --password-stdin, or typed at the prompt."
    )

    # Accepted from call_command only (tests), as by Django's createsuperuser.
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument("--email", required=True)
        parser.add_argument("--name", default="")
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="Read the password from the first line of standard input.",
        )

    def execute(self, *args, **options):
        self.stdin = options.get("stdin") or sys.stdin
        return super().execute(*args, **options)

    def handle(self, *args, email: str, name: str, password_stdin: bool, **options):
        User = get_user_model()
        email = User.objects.normalize_email(email)
        try:
            validate_email(email)
        except ValidationError as exc:
            raise CommandError(f"--email '{email}' is not a valid email address.") from exc

        user = User.objects.filter(email=email).first()
        password = self._read_password(from_stdin=password_stdin, required=user is None)
        if password is not None:
            candidate = user or User(email=email, name=name)
            try:
                password_validation.validate_password(password, candidate)
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages)) from exc

        if user is None:
            user = User(email=email, name=name, is_staff=True, is_superuser=True)
            user.set_password(password)
            services.user_operator_save(user=user)
            self.stdout.write(self.style.SUCCESS(f"Created the operator {email}."))
            return
        already = user.is_staff and user.is_superuser and user.is_active
        user.is_staff = user.is_superuser = user.is_active = True
        if password is not None:
            user.set_password(password)
        services.user_operator_save(user=user)
        if already:
            changed = " Password changed." if password is not None else ""
            self.stdout.write(f"{email} is an operator already.{changed}")
        else:
            self.stdout.write(self.style.SUCCESS(f"{email} is now an operator."))

    def _read_password(self, *, from_stdin: bool, required: bool) -> str | None:
        if from_stdin:
            password = self.stdin.readline().rstrip("\r\n")
            if not password:
                raise CommandError("--password-stdin: standard input had no password.")
            return password
        if not required:
            return None  # an existing user keeps their password
        try:
            password = getpass.getpass("Password: ")
            again = getpass.getpass("Password (again): ")
        except (EOFError, KeyboardInterrupt) as exc:
            raise CommandError("No password given.") from exc
        if not password:
            raise CommandError("The password may not be empty.")
        if password != again:
            raise CommandError("The passwords do not match.")
        return password
