"""Exports of data as archives: a tenant's whole data (portability, backups of its own, leaving
us), and a person's own data across every tenant they belong to (GDPR articles 15 and 20).

- `registry.py`: what an archive is made of. Each feature registers its resources (one NDJSON
  file each) from its `AppConfig.ready()`, as it registers its topics and audit actions: the
  kernel knows no feature's tables.
- `archive.py`: the archive itself, a `.tar.gz` of one NDJSON file per resource and a
  `manifest.json`, written in constant memory.
- `services.py`: the jobs that write them (kinds `tenant_export` and `personal_export`), to the
  `exports` storage (Django's storage API: the filesystem by default, S3 through
  django-storages in production); the signed, expiring download link; the beat job that deletes
  expired archives.

docs/data.md documents the archive's format.
"""
