"""Webhook endpoints and their deliveries over HTTP (`webhooks.manage`). Thin: input shapes here,
rules in webhooks/services.py.

The endpoint's `secret` is in the 201 answer of its creation and nowhere else, ever.
"""

import json
from collections.abc import Sequence
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse

from kernel.api.base import TenantViewSet, validated_input
from kernel.events import topics
from kernel.events.topics import MAX_TOPICS, TOPIC_PATTERN
from kernel.fields import StrictBooleanField
from kernel.permissions import Perm
from kernel.problems import Problem, ProblemType
from webhooks import selectors, services
from webhooks.models import WebhookDelivery, WebhookEndpoint

# --- serializers -------------------------------------------------------------------------------


class WebhookEndpointSerializer(serializers.ModelSerializer):
    circuit_state = serializers.ChoiceField(
        choices=WebhookEndpoint.CircuitState.choices,
        read_only=True,
        help_text="closed: deliveries are sent; open: they wait after repeated failures; "
        "half_open: the next attempt probes the endpoint.",
    )
    topics = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "topics", "is_active", "circuit_state", "created_at", "updated_at"]
        read_only_fields = fields


class WebhookEndpointCreatedSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(
        read_only=True,
        help_text="The signing secret (`whsec_…`). Shown in this response only: store it now.",
    )

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookURLField(serializers.CharField):
    """The endpoint's URL, as it is given: not stripped, so that what the document's pattern
    refuses (` https://…`) is refused here too; services check it against the SSRF rules."""

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def schema_constraints(self) -> dict[str, Any]:
        # The scheme, in any case (the parser lowercases it): https, or http too where private
        # targets are allowed (development). The host must resolve to public addresses only,
        # which no pattern can say: the example is one that does.
        private = selectors.private_targets_allowed()
        scheme = "[Hh][Tt][Tt][Pp][Ss]?" if private else "[Hh][Tt][Tt][Pp][Ss]"
        return {"pattern": f"^{scheme}://", "examples": ["https://93.184.215.14/hooks"]}


class TopicField(serializers.CharField):
    """A topic or a pattern of topics, as it is given (not stripped)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 100)
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def schema_constraints(self) -> dict[str, Any]:
        return {"pattern": TOPIC_PATTERN.pattern, "examples": ["catalog.product.*"]}


class WebhookEndpointInputSerializer(serializers.Serializer):
    url = WebhookURLField(
        max_length=2048,
        help_text="Where deliveries are POSTed: https, on a public address.",
    )
    topics = serializers.ListField(
        child=TopicField(),
        min_length=1,
        max_length=MAX_TOPICS,
        help_text="Topics or patterns (`catalog.product.*`, `*`) of the events to receive.",
    )
    is_active = StrictBooleanField(default=True)

    def validate_topics(self, topic_list: list[str]) -> list[str]:
        for topic in topic_list:
            # fullmatch: `$` alone would let a trailing newline through.
            if not TOPIC_PATTERN.fullmatch(topic):
                raise serializers.ValidationError(
                    f"{topic!r} is not a topic: dotted lower-case words, `*` as a wildcard."
                )
        unknown = topics.unknown_topics_detail(topic_list)
        if unknown is not None:
            raise serializers.ValidationError(unknown)
        return topic_list


@extend_schema_field(OpenApiTypes.OBJECT)
class PayloadField(serializers.Field):
    """The body that is sent, as the JSON object it is (stored as its exact text)."""

    def to_representation(self, value: str) -> Any:
        return json.loads(value)


class WebhookDeliverySerializer(serializers.ModelSerializer):
    endpoint = serializers.UUIDField(source="endpoint_id", read_only=True)
    webhook_id = serializers.CharField(
        source="event_id", read_only=True, help_text="The `webhook-id` header: the event's id."
    )
    payload = PayloadField(read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "endpoint",
            "webhook_id",
            "topic",
            "payload",
            "status",
            "attempts",
            "next_attempt_at",
            "last_attempt_at",
            "last_status_code",
            "last_error",
            "created_at",
            "delivered_at",
        ]
        read_only_fields = fields


class DeliveryFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=WebhookDelivery.Status.choices, required=False)


# --- views -------------------------------------------------------------------------------------

CONFLICT = OpenApiResponse(
    description="The delivery is still scheduled for another attempt, or the endpoint is disabled."
)


class WebhookEndpointViewSet(TenantViewSet):
    """The tenant's webhook endpoints: where its events are POSTed, signed."""

    model = WebhookEndpoint
    serializer_class = WebhookEndpointSerializer
    required_permissions = {
        "list": Perm.WEBHOOKS_MANAGE,
        "retrieve": Perm.WEBHOOKS_MANAGE,
        "create": Perm.WEBHOOKS_MANAGE,
        "update": Perm.WEBHOOKS_MANAGE,
        "partial_update": Perm.WEBHOOKS_MANAGE,
        "destroy": Perm.WEBHOOKS_MANAGE,
        "deliveries": Perm.WEBHOOKS_MANAGE,
        "redeliver": Perm.WEBHOOKS_MANAGE,
    }

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(WebhookEndpointSerializer(page, many=True).data)

    def _ensure_readable(self, topic_list: Sequence[str]) -> None:
        """An endpoint sends the data of its topics out: whoever sets it up must be allowed to
        read that data (`catalog.*` needs `catalog.read`)."""
        missing = topics.read_permissions_missing(topic_list, self.principal.permissions)
        if missing:
            raise Problem(
                ProblemType.PERMISSION_DENIED,
                detail=f"These topics carry data that needs {', '.join(missing)}.",
            )

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(WebhookEndpointSerializer(self.get_object()).data)

    @extend_schema(
        request=WebhookEndpointInputSerializer,
        responses={201: WebhookEndpointCreatedSerializer},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Create an endpoint. Its signing `secret` is in this response and nowhere else.

        Not idempotent (`Idempotency-Key`) on purpose: replaying the answer would mean storing
        the secret.
        """
        data = validated_input(self, WebhookEndpointInputSerializer)
        self._ensure_readable(data["topics"])
        endpoint = services.webhook_endpoint_create(**data)
        body = WebhookEndpointCreatedSerializer(endpoint).data
        location = reverse("webhook-detail", kwargs={"pk": endpoint.pk}, request=request)
        # The secret must not linger in any cache between here and the client.
        headers = {"Location": location, "Cache-Control": "no-store"}
        return Response(body, status=status.HTTP_201_CREATED, headers=headers)

    @extend_schema(
        request=WebhookEndpointInputSerializer, responses={200: WebhookEndpointSerializer}
    )
    def update(self, request: Request, *args: Any, partial: bool = False, **kwargs: Any):
        endpoint = self.get_object()
        data = validated_input(self, WebhookEndpointInputSerializer, partial=partial)
        if "topics" in data:
            self._ensure_readable(data["topics"])
        endpoint = services.webhook_endpoint_update(endpoint=endpoint, **data)
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(
        request=WebhookEndpointInputSerializer, responses={200: WebhookEndpointSerializer}
    )
    def partial_update(self, request: Request, *args: Any, **kwargs: Any):
        return self.update(request, *args, partial=True, **kwargs)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Delete the endpoint and its deliveries; nothing more is sent to it."""
        services.webhook_endpoint_delete(endpoint=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "status",
                str,
                enum=WebhookDelivery.Status.values,
                description="Only deliveries in this status (`dead`: given up on).",
            )
        ],
        responses=WebhookDeliverySerializer(many=True),
    )
    @action(detail=True, methods=["get"])
    def deliveries(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """The endpoint's deliveries, newest first."""
        endpoint = self.get_object()
        filters = DeliveryFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        deliveries: QuerySet[WebhookDelivery] = selectors.webhook_delivery_list(
            endpoint=endpoint,
            status=filters.validated_data.get("status"),
            hidden_topics=topics.unreadable(self.principal.permissions),
        )
        page = self.paginate_queryset(deliveries)
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)

    @extend_schema(request=None, responses={200: WebhookDeliverySerializer, 409: CONFLICT})
    @action(
        detail=True,
        methods=["post"],
        url_path="deliveries/<uuid:delivery_id>/redeliver",
        url_name="redeliver",
    )
    def redeliver(self, request: Request, *args: Any, delivery_id: Any, **kwargs: Any):
        """Send a succeeded or dead delivery again, now, with its attempts reset and the same
        `webhook-id`. A delivery still being retried is a 409."""
        delivery = selectors.webhook_delivery_get(
            endpoint=self.get_object(),
            delivery_id=delivery_id,
            hidden_topics=topics.unreadable(self.principal.permissions),
        )
        delivery = services.webhook_delivery_redeliver(delivery=delivery)
        return Response(WebhookDeliverySerializer(delivery).data)
