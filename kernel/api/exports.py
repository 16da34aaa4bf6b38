"""Exports over HTTP (kernel/exports/, docs/data.md).

- `POST /tenant/export/` (`tenant.export`; owners and admins hold it): the whole tenant's data.
- `POST /auth/me/export/`: a person's own data across every tenant they belong to, through
  their own sign-in only; the job is theirs alone.
- `GET /exports/<token>/`: the archive, to whoever holds the signed link a succeeded job shows,
  without any credential, until it expires.
"""

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions
from rest_framework.views import APIView

from kernel import ratelimit
from kernel.api.base import IsPerson, TenantAPIView
from kernel.api.jobs import JobSerializer, job_accepted
from kernel.exports import services
from kernel.openapi import problem
from kernel.permissions import Perm
from kernel.problems import Problem, ProblemType

_ACCEPTED = OpenApiResponse(JobSerializer, description="The job, pending; `Location` is its URL.")


class TenantExportView(TenantAPIView):
    """Export all of the tenant's data as an archive; its progress and link are a job."""

    required_permissions = {"post": Perm.TENANT_EXPORT}

    @extend_schema(operation_id="tenant_export", request=None, responses={202: _ACCEPTED})
    def post(self, request, version):
        return job_accepted(services.tenant_export_start(actor=self.principal), request)


class PersonalExportView(TenantAPIView):
    """Export the signed-in person's own data, in every tenant they belong to."""

    permission_classes = [*TenantAPIView.permission_classes, IsPerson]
    required_permissions = {"post": None}

    @extend_schema(operation_id="auth_me_export", request=None, responses={202: _ACCEPTED})
    def post(self, request, version):
        return job_accepted(services.personal_export_start(actor=self.principal), request)


class ExportDownloadView(APIView):
    """An export's archive (`application/gzip`), by its signed link alone: no credential."""

    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]
    throttle_classes: list = []

    def initial(self, request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        ratelimit.limit_public_request(request, scope=ratelimit.PublicScope.OTHER, account=None)

    @extend_schema(
        operation_id="export_download",
        auth=[],
        responses={
            (200, "application/gzip"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The archive (docs/data.md)."
            ),
            **problem(410, "The link has expired; its archive is deleted (export-expired)."),
        },
    )
    def get(self, request, version, token):
        try:
            job, archive = services.archive_for_link(token)
        except services.LinkRefused as refused:
            if refused.expired:
                raise Problem(ProblemType.EXPORT_EXPIRED) from None
            raise Problem(ProblemType.NOT_FOUND) from None
        response = FileResponse(
            archive,
            as_attachment=True,
            filename=services.download_filename(job),
            content_type="application/gzip",
        )
        response["Cache-Control"] = "private, no-store"
        response["ETag"] = f'"{job.result["sha256"]}"'
        return response
