"""Jobs over HTTP: `/jobs/` lists the caller's tenant's jobs that the caller may read, newest
first; `/jobs/{id}/` is one of them (kernel/jobs.py).

Which jobs a caller sees is decided by kind: a shared kind needs the permission it registered
(an import needs `catalog.read`), a personal kind (a person's export of their own data) is its
creator's alone. A job the caller may not read is a 404, as if it did not exist.
"""

from typing import Any

from django.db.models import Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import mixins, serializers, status
from rest_framework.response import Response
from rest_framework.reverse import reverse

from kernel import jobs
from kernel.api.base import TenantViewSet
from kernel.models import Job


class JobErrorSerializer(serializers.Serializer):
    row = serializers.IntegerField(read_only=True, help_text="The data row, from 1 (no header).")
    field = serializers.CharField(read_only=True, help_text="The field, when the error is one's.")
    message = serializers.CharField(read_only=True)


class JobSerializer(serializers.ModelSerializer):
    kind = serializers.CharField(
        read_only=True,
        help_text="What the job does: `products.import`, `tenant_export`, `personal_export`.",
    )
    errors = JobErrorSerializer(many=True, read_only=True)
    errors_omitted = serializers.IntegerField(
        read_only=True, help_text="Errors beyond those listed (the list keeps the first 1,000)."
    )
    detail = serializers.CharField(
        read_only=True, help_text="Why the job itself failed; empty otherwise."
    )
    result = serializers.SerializerMethodField(
        help_text=(
            "What a succeeded job made, in its kind's terms; `{}` until then. An export: "
            "`download_url` (a signed link, no credential needed), `expires_at`, `size` in "
            "bytes, `sha256` of the archive."
        )
    )

    class Meta:
        model = Job
        fields = [
            "id",
            "kind",
            "status",
            "total",
            "processed",
            "succeeded",
            "failed",
            "errors",
            "errors_omitted",
            "detail",
            "result",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_result(self, job: Job) -> dict[str, Any]:
        shown = jobs.kind_of(job).shown_result
        if shown is None or job.status != Job.Status.SUCCEEDED:
            return dict(job.result)
        return dict(shown(job, self.context.get("request")))


def job_accepted(job: Job, request) -> Response:
    """The 202 answer of a request that started `job`: the job, and its URL in `Location`."""
    location = reverse("job-detail", kwargs={"pk": job.pk}, request=request)
    return Response(
        JobSerializer(job, context={"request": request}).data,
        status=status.HTTP_202_ACCEPTED,
        headers={"Location": location},
    )


class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Background jobs of the caller's tenant that the caller may read, newest first."""

    model = Job
    serializer_class = JobSerializer
    # Decided per kind, in scope_queryset.
    required_permissions = {"list": None, "retrieve": None}

    def scope_queryset(self, queryset):
        principal = self.principal
        readable = Q(kind__in=jobs.readable_kinds(principal.permissions))
        user = principal.user
        if user is not None and principal.api_key is None and principal.app is None:
            # A person's own exports are theirs alone, through their own sign-in only.
            readable |= Q(kind__in=jobs.personal_kinds(), created_by_user_id=user.pk)
        return queryset.filter(readable).order_by("-created_at")
