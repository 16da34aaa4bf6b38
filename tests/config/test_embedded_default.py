"""The embedded default (no DATABASE_URL, REDIS_URL or CELERY_BROKER_URL: SQLite, local memory,
tasks inline), as `scripts/run` serves it, in a process of its own with a clean environment."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

WRITE = """
from catalog import services
from kernel.context import tenant_context
from tests.factories import make_tenant

tenant = make_tenant()
with tenant_context(tenant.id):
    services.product_create(tenant=tenant, actor=None, data={"sku": "A-1", "name": "A", "price": 1})
print("written")
"""


def manage(directory: Path, *arguments: str) -> subprocess.CompletedProcess:
    environment = {
        "PATH": os.environ["PATH"],
        "HOME": str(directory),
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": f"sqlite:///{directory / 'db.sqlite3'}",
        "SECRET_KEY": "embedded-default-test",
    }
    return subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_first_write_logs_no_warning(tmp_path):
    # A first-hour finding: kombu warned "No hostname was supplied" on the first write.
    migrated = manage(tmp_path, "migrate", "--verbosity", "0")
    assert migrated.returncode == 0, migrated.stderr

    written = manage(tmp_path, "shell", "-c", WRITE)

    assert written.returncode == 0, written.stderr
    assert "written" in written.stdout
    assert '"level": "warning"' not in written.stderr, written.stderr
    assert "hostname" not in written.stderr.lower()
