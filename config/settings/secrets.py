"""The development secret: generated once and kept in var/, so restarts keep sessions and tokens."""

import os
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
