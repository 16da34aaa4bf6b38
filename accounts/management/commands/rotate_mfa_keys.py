"""`rotate_mfa_keys`: every secret encrypted with MFA_ENCRYPTION_KEYS (second-factor secrets, the
client secrets of tenants' identity providers) encrypted again with the newest key, so that the
older keys can then be dropped (docs/security.md)."""

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.mfa import secrets as mfa_secrets
from accounts.models import SsoConnection, TotpDevice
from kernel.context import operator_scope


class Command(BaseCommand):
    help = (
        "Encrypt every TOTP secret and single sign-on client secret again with the first key of "
        "MFA_ENCRYPTION_KEYS."
    )

    def handle(self, *args, **options):
        devices = connections = 0
        with transaction.atomic(), operator_scope("re-encrypting every tenant's SSO secret"):
            for device in TotpDevice.objects.select_for_update().only("id", "encrypted_key"):
                device.encrypted_key = mfa_secrets.rotated(device.encrypted_key)
                device.save(update_fields=["encrypted_key"])
                devices += 1
            for connection in SsoConnection.objects.select_for_update().only(
                "id", "tenant_id", "encrypted_client_secret"
            ):
                connection.encrypted_client_secret = mfa_secrets.rotated(
                    connection.encrypted_client_secret
                )
                connection.save(update_fields=["encrypted_client_secret"])
                connections += 1
        self.stdout.write(
            f"Encrypted {devices} second-factor secret(s) and {connections} single sign-on "
            "client secret(s) with the newest key."
        )
