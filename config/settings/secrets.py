"""The development secret: generated once and kept in var/, so restarts keep sessions and tokens."""

import os
import re
import secrets
from pathlib import Path


def development_secret_key(var_dir: Path) -> str:
    path = var_dir / "dev-secret-key"
    var_dir.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: when several processes start at once, exactly one writes the key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


def development_signing_key(var_dir: Path) -> str:
    """The OpenID Connect signing key of a development server (an RSA private key, PEM),
    generated once and kept in var/ like the secret key: every process of the server signs and
    publishes the same key, and ID tokens survive a restart."""
    path = var_dir / "dev-oidc-signing-key.pem"
    if path.exists():
        return path.read_text()
    pem = rsa_private_key_pem()
    var_dir.mkdir(parents=True, exist_ok=True)
    # Written whole under a name of its own, then linked into place: a process that starts at
    # the same moment reads one complete key, whichever was linked first.
    staged = var_dir / f".dev-oidc-signing-key.{os.getpid()}"
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(pem)
    try:
        os.link(staged, path)
    except FileExistsError:
        pass
    finally:
        staged.unlink()
    return path.read_text()


def rsa_private_key_pem() -> str:
    """A new RSA private key (2048 bits, PKCS#8 PEM): what OIDC_RSA_PRIVATE_KEY holds."""
    # Imported here: only a server without OIDC_RSA_PRIVATE_KEY (and the tests) need it.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def development_mfa_key(secret_key: str) -> str:
    """The key that encrypts second-factor secrets on a development server without
    MFA_ENCRYPTION_KEYS: a Fernet key derived from its secret key, so that it survives restarts
    as the secret key does. Production requires its own keys."""
    import base64
    import hashlib

    digest = hashlib.sha256(f"mfa-encryption:{secret_key}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()


def pem_blocks(text: str) -> list[str]:
    """The PEM private keys in `text`, one after the other (the retired keys' variable)."""
    return [
        block + "\n"
        for block in re.findall(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----", text, re.S
        )
    ]
