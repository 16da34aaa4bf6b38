"""REST for notifications: only ever the caller's own, in the caller's tenant."""

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from kernel.api.base import TenantAPIView, TenantViewSet
from kernel.events import topics
from kernel.permissions import Perm
from kernel.problems import Problem, ProblemType
from notifications import selectors, services
from notifications.models import Notification


class PersonOnly:
    """Notifications belong to people: an API key has no inbox."""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if request.auth.user is None:
            raise Problem(ProblemType.PERMISSION_DENIED, detail="Notifications are for people.")


class NotificationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Notification
        fields = ["id", "topic", "data", "created_at", "read_at"]
        read_only_fields = fields


class NotificationFilterSerializer(serializers.Serializer):
    unread = serializers.BooleanField(required=False, default=None)
    topic = serializers.CharField(required=False, max_length=100)


class NotificationViewSet(PersonOnly, mixins.ListModelMixin, TenantViewSet):
    model = Notification
    serializer_class = NotificationSerializer
    # The primary key is an internal sequence; clients know notifications by their UUID.
    lookup_field = "id"
    required_permissions = {
        "list": Perm.NOTIFICATIONS_READ,
        "read": Perm.NOTIFICATIONS_READ,
        "read_all": Perm.NOTIFICATIONS_READ,
        "unread_count": Perm.NOTIFICATIONS_READ,
    }

    def scope_queryset(self, queryset):
        return (
            queryset.for_user(self.request.user.id)
            .exclude(topic__in=self._hidden_topics())
            .order_by("-seq")
        )

    def _hidden_topics(self) -> list[str]:
        # An event carries its domain's data: a member who may not read the catalog (any more)
        # does not see its catalog notifications either.
        return topics.unreadable(self.principal.permissions)

    @extend_schema(
        parameters=[
            OpenApiParameter("unread", bool, description="Only unread ones."),
            OpenApiParameter("topic", str, description="Only this topic."),
        ]
    )
    def list(self, request, *args, **kwargs):
        # A plain dict, not the QueryDict: DRF reads an empty value in a form as "not given",
        # and a missing boolean as false; a query string is neither.
        filters = NotificationFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        queryset = selectors.notification_list(
            user_id=request.user.id, hidden_topics=self._hidden_topics(), **filters.validated_data
        )
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(NotificationSerializer(page, many=True).data)

    @extend_schema(request=None, responses={200: NotificationSerializer})
    @action(detail=True, methods=["post"])
    def read(self, request, *args, **kwargs):
        notification = services.notification_mark_read(notification=self.get_object())
        return Response(NotificationSerializer(notification).data)

    @extend_schema(
        request=None,
        responses={200: inline_serializer("ReadAll", {"updated": serializers.IntegerField()})},
    )
    @action(detail=False, methods=["post"], url_path="read-all")
    def read_all(self, request, *args, **kwargs):
        updated = services.notifications_mark_all_read(user_id=request.user.id)
        return Response({"updated": updated})

    @extend_schema(
        responses={200: inline_serializer("UnreadCount", {"count": serializers.IntegerField()})}
    )
    @action(detail=False, methods=["get"], url_path="unread-count")
    def unread_count(self, request, *args, **kwargs):
        count = selectors.unread_count(user_id=request.user.id, hidden_topics=self._hidden_topics())
        return Response({"count": count})


class PreferencesSerializer(serializers.Serializer):
    topics = serializers.ListField(
        child=serializers.CharField(max_length=100), max_length=100, allow_null=True
    )

    def validate_topics(self, topic_list: list[str] | None) -> list[str] | None:
        unknown = topics.unknown_topics_detail(topic_list or ())
        if unknown is not None:
            raise serializers.ValidationError(unknown)
        return topic_list


class NotificationPreferencesView(PersonOnly, TenantAPIView):
    """`topics`: the topic patterns to be notified of; null means every topic."""

    required_permissions = {"get": Perm.NOTIFICATIONS_READ, "put": Perm.NOTIFICATIONS_READ}

    @extend_schema(responses={200: PreferencesSerializer})
    def get(self, request, version):
        return Response({"topics": selectors.preferred_topics(user_id=request.user.id)})

    @extend_schema(request=PreferencesSerializer, responses={200: PreferencesSerializer})
    def put(self, request, version):
        serializer = PreferencesSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        topics = serializer.validated_data["topics"]
        if topics is None:
            services.preferences_clear(user_id=request.user.id)
        else:
            services.preferences_set(user_id=request.user.id, topics=topics)
        return Response({"topics": selectors.preferred_topics(user_id=request.user.id)})
