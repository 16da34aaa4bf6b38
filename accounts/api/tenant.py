"""Members, roles, invitations, the tenant itself and its audit log. Thin: input in serializers,
rules in services.

Each view says in `required_permissions` which permission code each action needs; that map is
the whole of the permission checking done here. The rules that depend on more than a code (grant
only what you hold, owner-only rights, the last owner) are the services'.
"""

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, permissions, status
from rest_framework.decorators import action
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from accounts import services
from accounts.api import tenant_serializers as s
from kernel import audit_chain, tenants
from kernel.api.base import TenantAPIView, TenantViewSet, validated_input
from kernel.openapi import problem
from kernel.pagination import CursorPagination
from kernel.permissions import Perm
from kernel.tenancy.models import AuditEvent, Invitation, Membership, Role
from kernel.tenancy.selectors import (
    AuditFilters,
    audit_event_list,
    permission_list,
    with_invitation_details,
    with_member_details,
)


class CursorPage(CursorPagination):
    """The list shape of the API: `{"results", "next", "previous"}`, `?page_size=` up to 100;
    a bad `cursor` or `page_size` is a 400 (kernel.pagination)."""


class PermissionPage(CursorPage):
    ordering = "code"


class RolePage(CursorPage):
    ordering = "name"


class MemberPage(CursorPage):
    ordering = "created_at"


class InvitationPage(CursorPage):
    ordering = "-created_at"


ROLE_CHANGE = problem(409, "A built-in role, or a name another role has (conflict).")
LAST_OWNER = problem(409, "The change would leave the tenant without an owner (conflict).")


def created(request, body: dict, viewname: str, pk) -> Response:
    location = reverse(viewname, kwargs={"pk": pk}, request=request)
    return Response(body, status=status.HTTP_201_CREATED, headers={"Location": location})


class PermissionListView(TenantAPIView):
    """The permission codes roles are made of."""

    required_permissions = {"get": None}

    @extend_schema(responses={200: s.PermissionPageSerializer})
    def get(self, request, version):
        paginator = PermissionPage()
        page = paginator.paginate_queryset(permission_list(), request, view=self)
        return paginator.get_paginated_response(s.PermissionSerializer(page, many=True).data)


class RoleViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """The tenant's roles: the built-in ones, read-only, and its own."""

    model = Role
    serializer_class = s.RoleSerializer
    pagination_class = RolePage
    # Reading roles is part of seeing the members; roles.manage implies members.read
    # (services.IMPLIED_PERMISSIONS), so every role manager can read them too.
    required_permissions = {
        "list": Perm.MEMBERS_READ,
        "retrieve": Perm.MEMBERS_READ,
        "create": Perm.ROLES_MANAGE,
        "update": Perm.ROLES_MANAGE,
        "partial_update": Perm.ROLES_MANAGE,
        "destroy": Perm.ROLES_MANAGE,
    }

    @extend_schema(
        request=s.RoleInputSerializer,
        responses={201: s.RoleSerializer, **problem(409, "A role of that name exists (conflict).")},
    )
    def create(self, request, *args, **kwargs):
        data = validated_input(self, s.RoleInputSerializer)
        role = services.role_create(tenant=self.principal.tenant, actor=self.principal, **data)
        return created(request, s.RoleSerializer(role).data, "role-detail", role.pk)

    @extend_schema(request=s.RoleInputSerializer, responses={200: s.RoleSerializer, **ROLE_CHANGE})
    def update(self, request, *args, partial: bool = False, **kwargs):
        role = self.get_object()
        data = validated_input(self, s.RoleInputSerializer, partial=partial)
        role = services.role_update(
            tenant=self.principal.tenant, actor=self.principal, role=role, **data
        )
        return Response(s.RoleSerializer(role).data)

    @extend_schema(request=s.RoleInputSerializer, responses={200: s.RoleSerializer, **ROLE_CHANGE})
    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, partial=True, **kwargs)

    @extend_schema(
        responses={
            204: None,
            **problem(409, "A built-in role, or a role members still hold (conflict)."),
        }
    )
    def destroy(self, request, *args, **kwargs):
        services.role_delete(
            tenant=self.principal.tenant, actor=self.principal, role=self.get_object()
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class MemberViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """The tenant's members. Joining is through an invitation."""

    model = Membership
    serializer_class = s.MemberSerializer
    pagination_class = MemberPage
    required_permissions = {
        "list": Perm.MEMBERS_READ,
        "retrieve": Perm.MEMBERS_READ,
        "partial_update": Perm.MEMBERS_MANAGE,
        "destroy": Perm.MEMBERS_MANAGE,
    }

    def scope_queryset(self, queryset: QuerySet[Membership]) -> QuerySet[Membership]:
        return with_member_details(queryset)

    @extend_schema(
        request=s.MemberRolesInputSerializer,
        responses={200: s.MemberSerializer, **LAST_OWNER},
    )
    def partial_update(self, request, *args, **kwargs):
        membership = self.get_object()
        data = validated_input(self, s.MemberRolesInputSerializer)
        services.member_update_roles(
            tenant=self.principal.tenant,
            actor=self.principal,
            membership=membership,
            roles=data["roles"],
        )
        return Response(s.MemberSerializer(self.get_object()).data)

    @extend_schema(responses={204: None, **LAST_OWNER})
    def destroy(self, request, *args, **kwargs):
        services.member_remove(
            tenant=self.principal.tenant, actor=self.principal, membership=self.get_object()
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class InvitationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Invitations to join the tenant. The token goes to the invited address only."""

    model = Invitation
    serializer_class = s.InvitationSerializer
    pagination_class = InvitationPage
    required_permissions = {
        "list": Perm.MEMBERS_READ,
        "retrieve": Perm.MEMBERS_READ,
        "create": Perm.MEMBERS_MANAGE,
        "destroy": Perm.MEMBERS_MANAGE,
    }

    def scope_queryset(self, queryset: QuerySet[Invitation]) -> QuerySet[Invitation]:
        return with_invitation_details(queryset)

    @extend_schema(
        request=s.InvitationInputSerializer,
        responses={
            201: s.InvitationSerializer,
            **problem(409, "The address is a member already or has a pending invitation."),
        },
    )
    def create(self, request, *args, **kwargs):
        data = validated_input(self, s.InvitationInputSerializer)
        invitation = services.invitation_create(
            tenant=self.principal.tenant, actor=self.principal, **data
        )
        invitation = self.get_queryset().get(pk=invitation.pk)
        return created(
            request, s.InvitationSerializer(invitation).data, "invitation-detail", invitation.pk
        )

    @extend_schema(responses={204: None, **problem(409, "The invitation was accepted (conflict).")})
    def destroy(self, request, *args, **kwargs):
        """Revoke the invitation; it stays listed, with `revoked_at` set."""
        services.invitation_revoke(
            tenant=self.principal.tenant, actor=self.principal, invitation=self.get_object()
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class InvitationAcceptView(APIView):
    """Public: the token is the credential. Returns tokens for the tenant joined."""

    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]

    @extend_schema(
        request=s.InvitationAcceptSerializer,
        responses={
            200: s.InvitationAcceptResponseSerializer,
            **problem(409, "The invited address is a member of the tenant already (conflict)."),
        },
    )
    def post(self, request, version):
        serializer = s.InvitationAcceptSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user, tenant, tokens = services.invitation_accept(**serializer.validated_data)
        body = {"user": user, "tenant": tenant, **tokens}
        return Response(s.InvitationAcceptResponseSerializer(body).data)


class TenantView(TenantAPIView):
    """The caller's tenant. Deleting it is for owners only (services.tenant_delete)."""

    required_permissions = {
        "get": None,
        "patch": Perm.TENANT_MANAGE,
        "delete": Perm.TENANT_MANAGE,
    }

    @extend_schema(responses={200: s.TenantSerializer})
    def get(self, request, version):
        return Response(s.TenantSerializer(self.principal.tenant).data)

    @extend_schema(request=s.TenantInputSerializer, responses={200: s.TenantSerializer})
    def patch(self, request, version):
        data = validated_input(self, s.TenantInputSerializer, partial=True)
        tenant = tenants.tenant_update(tenant=self.principal.tenant, actor=self.principal, **data)
        return Response(s.TenantSerializer(tenant).data)

    @extend_schema(responses={204: None})
    def delete(self, request, version):
        tenants.tenant_delete(tenant=self.principal.tenant, actor=self.principal)
        return Response(status=status.HTTP_204_NO_CONTENT)


AUDIT_FILTER_PARAMETERS = [
    OpenApiParameter(name, type_, OpenApiParameter.QUERY, description=description)
    for name, type_, description in [
        ("actor_id", OpenApiTypes.UUID, "Events of this user or API key."),
        ("actor_type", OpenApiTypes.STR, "user, api_key, operator or system."),
        (
            "action",
            OpenApiTypes.STR,
            "An action (`tenants.member.removed`), or a prefix ending in `.*` "
            "(`tenants.member.*`).",
        ),
        ("target_type", OpenApiTypes.STR, "Events about this kind of object (`member`, ...)."),
        ("target_id", OpenApiTypes.STR, "Events about this object."),
        ("since", OpenApiTypes.DATETIME, "At or after this time (RFC 3339)."),
        ("until", OpenApiTypes.DATETIME, "Before this time (RFC 3339)."),
    ]
]


class NDJSONRenderer(BaseRenderer):
    """Lets `?format=ndjson` and `Accept: application/x-ndjson` through; the export streams its
    own body."""

    media_type = "application/x-ndjson"
    format = "ndjson"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        raise NotImplementedError("The audit export streams its body itself.")


class AuditCSVRenderer(NDJSONRenderer):
    media_type = "text/csv"
    format = "csv"


class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """The tenant's audit log, newest first. Read-only: there is no way to change an event."""

    model = AuditEvent
    serializer_class = s.AuditEventSerializer
    required_permissions = {
        "list": Perm.AUDIT_READ,
        "retrieve": Perm.AUDIT_READ,
        "verify": Perm.AUDIT_READ,
        "export": Perm.AUDIT_READ,
    }

    def scope_queryset(self, queryset: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        if self.action != "list":
            return queryset
        # A plain dict: in a QueryDict, DRF reads `?until=` as "not given" instead of invalid.
        params = s.AuditEventFilterSerializer(data=self.request.query_params.dict())
        params.is_valid(raise_exception=True)
        # The selector filters on the same tenant as `queryset` does, and narrows and orders it.
        return audit_event_list(
            tenant=self.principal.tenant, filters=AuditFilters(**params.validated_data)
        )

    @extend_schema(parameters=AUDIT_FILTER_PARAMETERS)
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def dispatch(self, request, *args, **kwargs):
        response = super().dispatch(request, *args, **kwargs)
        export = getattr(self, "export_body", None)
        if export is not None and response.status_code == status.HTTP_200_OK:
            # The first chunk before the status line goes out, after the request's transaction
            # (super's), in which the stream's own must not nest: a database failing now is a
            # 503 problem instead of a 200 whose body stops short (catalog/exports.py).
            export.start()
        return response

    @extend_schema(responses={200: s.AuditVerificationSerializer})
    @action(detail=False, methods=["get"])
    def verify(self, request, *args, **kwargs):
        """Walk the tenant's whole hash chain and say whether it holds (docs/audit.md)."""
        result = audit_chain.verify(tenant_id=self.principal.tenant.pk)
        return Response(result.as_dict())

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "format", OpenApiTypes.STR, OpenApiParameter.QUERY, enum=["ndjson", "csv"]
            ),
            *(p for p in AUDIT_FILTER_PARAMETERS if p.name in ("since", "until")),
        ],
        responses={
            (200, NDJSONRenderer.media_type): OpenApiResponse(
                OpenApiTypes.STR, description="One event per line, in chain order. Streamed."
            ),
            (200, AuditCSVRenderer.media_type): OpenApiResponse(
                OpenApiTypes.STR, description="The same, as CSV with a header. Streamed."
            ),
        },
    )
    @action(
        detail=False,
        methods=["get"],
        renderer_classes=[NDJSONRenderer, AuditCSVRenderer, JSONRenderer],
    )
    def export(self, request, *args, **kwargs):
        """The tenant's events in chain order, hashes included, for checking them elsewhere."""
        params = s.AuditTimeRangeSerializer(data=request.query_params.dict())
        params.is_valid(raise_exception=True)
        fmt = request.accepted_renderer.format
        fmt = "csv" if fmt == "csv" else "ndjson"
        self.export_body = audit_chain.export_stream(fmt=fmt, **params.validated_data)
        media_type = AuditCSVRenderer.media_type if fmt == "csv" else NDJSONRenderer.media_type
        response = StreamingHttpResponse(
            self.export_body, content_type=f"{media_type}; charset=utf-8"
        )
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="audit-events-{stamp}.{fmt}"'
        response["Cache-Control"] = "no-store"
        return response
