"""Background jobs of the catalog, named here so that the worker's autodiscovery of
`catalog.tasks` registers them: the bulk import's task lives beside the work it runs
(catalog/imports/worker.py)."""

from catalog.imports.worker import catalog_import_task

__all__ = ["catalog_import_task"]
