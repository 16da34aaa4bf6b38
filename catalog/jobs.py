"""The catalog's kinds of job (kernel/jobs.py): the bulk import of products."""

from kernel.jobs import JobKind
from kernel.permissions import Perm

# An import's job lists the rows it refused: readable by whoever may read the catalog.
PRODUCTS_IMPORT = JobKind("products.import", read_permission=Perm.CATALOG_READ)
