"""Bulk work over HTTP: the product import (a job, followed at /jobs/: kernel/api/jobs.py) and
the CSV export.

Thin: the file checks and the import are in catalog/imports/, the export in catalog/exports.py.
"""

from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from catalog import exports, imports
from catalog.api import filters
from catalog.api import serializers as s
from catalog.api.views import PRODUCT_LIST_PARAMETERS
from kernel.api.base import TenantAPIView
from kernel.api.jobs import JobSerializer, job_accepted
from kernel.permissions import Perm
from kernel.problems import PROBLEM_CONTENT_TYPE, Problem, ProblemType

# The export's rows come in this order unless `?ordering=` says otherwise: stable, and what a
# person diffing two exports wants.
DEFAULT_EXPORT_ORDERING = "sku"
# List parameters that mean nothing for a file of every matching row.
_NOT_FOR_EXPORT = {"fields", "If-None-Match"}


def _problem(status: int, description: str) -> dict:
    schema = {"$ref": "#/components/schemas/Problem"}
    return {(status, PROBLEM_CONTENT_TYPE): OpenApiResponse(schema, description=description)}


class CSVRenderer(BaseRenderer):
    """Lets content negotiation accept `Accept: text/csv`; the export streams its own body."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context=None):
        raise NotImplementedError("The CSV export streams its body itself.")


class ProductImportView(TenantAPIView):
    """Start a bulk import of products; its progress is a job."""

    parser_classes = [MultiPartParser]
    required_permissions = {"post": Perm.CATALOG_IMPORT}

    @extend_schema(
        operation_id="products_import",
        request={"multipart/form-data": s.ProductImportSerializer},
        responses={
            202: OpenApiResponse(
                JobSerializer, description="The job, pending; `Location` is its URL."
            ),
            **_problem(
                413,
                "The file is larger than CATALOG_IMPORT_MAX_BYTES (payload-too-large).",
            ),
            **_problem(415, "Not multipart, or a file that is neither CSV nor JSON."),
        },
    )
    def post(self, request: Request, version: str) -> Response:
        upload = request.data.get("file")
        if not isinstance(upload, UploadedFile):
            raise ValidationError({"file": ["Attach the file to import as the form field `file`."]})
        limit = settings.CATALOG_IMPORT_MAX_BYTES
        if upload.size is not None and upload.size > limit:
            raise Problem(
                ProblemType.PAYLOAD_TOO_LARGE,
                detail=f"The file is {upload.size} bytes; the limit is {limit}.",
            )
        source = imports.import_file_read(
            name=upload.name or "", content_type=upload.content_type, content=upload.read()
        )
        job = imports.import_start(actor=self.principal, source=source)
        return job_accepted(job, request)


class ProductExportView(TenantAPIView):
    """Every product matching the list filters, as CSV with the import's columns."""

    renderer_classes = [CSVRenderer, JSONRenderer]
    required_permissions = {"get": Perm.CATALOG_READ}

    def dispatch(self, request, *args, **kwargs):
        response = super().dispatch(request, *args, **kwargs)
        export = getattr(self, "export", None)
        if export is not None and response.status_code == status.HTTP_200_OK:
            # The first chunk before the status line goes out, and after the request's
            # transaction (super's), which the stream's own transaction must not nest in: a
            # database failing now raises from the view, which the problem middleware answers
            # with a 503 problem, instead of a 200 whose body stops short (catalog/exports.py).
            # The stream's transaction has ended with the error.
            export.start()
        return response

    @extend_schema(
        operation_id="products_export",
        parameters=[p for p in PRODUCT_LIST_PARAMETERS if p.name not in _NOT_FOR_EXPORT],
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description=(
                    "CSV, UTF-8, header first: sku, name, description, price, currency, stock, "
                    "is_active, category, tags, attributes. Streamed."
                ),
            )
        },
    )
    def get(self, request: Request, version: str) -> StreamingHttpResponse:
        query, product_filters = filters.product_list_query(request, page_size=1)
        ordering = query.ordering if request.query_params.get("ordering") else None
        self.export = exports.product_csv_stream(
            filters=product_filters,
            ordering=ordering or DEFAULT_EXPORT_ORDERING,
            chunk_size=settings.CATALOG_EXPORT_CHUNK_SIZE,
        )
        response = StreamingHttpResponse(self.export, content_type="text/csv; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="products-{stamp}.csv"'
        response["Cache-Control"] = "no-store"
        return response
