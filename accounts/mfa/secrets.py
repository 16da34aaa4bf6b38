"""Device secrets encrypted at rest: Fernet (AES-128-CBC with HMAC-SHA256) with the keys of
MFA_ENCRYPTION_KEYS, newest first. A secret is always encrypted with the newest key and
decrypted with whichever key made it, so that a new key is rolled out by putting it first, running
`manage.py rotate_mfa_keys` (which re-encrypts every secret with it), then dropping the old one.
"""

import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@functools.cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("MFA_ENCRYPTION_KEYS names no key.")
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(
            "MFA_ENCRYPTION_KEYS must hold Fernet keys (32 url-safe base64-encoded bytes each)."
        ) from exc


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.MFA_ENCRYPTION_KEYS))


def encrypt(secret: bytes) -> str:
    return fernet().encrypt(secret).decode()


def decrypt(ciphertext: str) -> bytes:
    """The secret; ImproperlyConfigured when no key of MFA_ENCRYPTION_KEYS made it (a key was
    dropped before `rotate_mfa_keys` ran): a deployment error, not the person's."""
    try:
        return fernet().decrypt(ciphertext.encode())
    except InvalidToken as exc:
        raise ImproperlyConfigured(
            "A second-factor secret was encrypted with a key that MFA_ENCRYPTION_KEYS no longer "
            "holds: put the key back and run `manage.py rotate_mfa_keys`."
        ) from exc


def rotated(ciphertext: str) -> str:
    """The same secret, encrypted with the newest key."""
    return fernet().rotate(ciphertext.encode()).decode()
