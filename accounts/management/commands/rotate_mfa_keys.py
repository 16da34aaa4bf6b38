"""`rotate_mfa_keys`: every second-factor secret encrypted again with the newest key of
MFA_ENCRYPTION_KEYS, so that the older keys can then be dropped (docs/security.md)."""

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.mfa import secrets as mfa_secrets
from accounts.models import TotpDevice


class Command(BaseCommand):
    help = "Encrypt every TOTP secret again with the first key of MFA_ENCRYPTION_KEYS."

    def handle(self, *args, **options):
        rotated = 0
        with transaction.atomic():
            for device in TotpDevice.objects.select_for_update().only("id", "encrypted_key"):
                device.encrypted_key = mfa_secrets.rotated(device.encrypted_key)
                device.save(update_fields=["encrypted_key"])
                rotated += 1
        self.stdout.write(f"Encrypted {rotated} second-factor secret(s) with the newest key.")
