"""The event feed for client systems that prefer to pull."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from messaging.events import selectors
from messaging.events.mappings import EventType
from tenants.authentication import HasScope
from tenants.models import ApiScope


class EventOutput(serializers.Serializer):
    id = serializers.CharField(help_text="Stable id (the webhook-id): deduplicate on it.")
    type = serializers.ChoiceField(choices=list(EventType.ALL))
    timestamp = serializers.DateTimeField()
    subject = serializers.CharField(help_text="The MPAN, where there is one.")
    mapping = serializers.CharField(
        allow_null=True, help_text="The mapping and version that made it, e.g. consumption@2."
    )
    source_message_id = serializers.IntegerField(
        allow_null=True, help_text="The DIP message it was derived from."
    )
    # The metaclass takes declared fields off the class, so these names shadow nothing at run time.
    source = serializers.CharField(allow_null=True)  # type: ignore[assignment]
    supersedes = serializers.CharField(
        allow_null=True, help_text="The event this one re-derives with a newer mapping."
    )
    data = serializers.DictField()  # type: ignore[assignment]


class EventListApi(APIView):
    """The tenant's events after a cursor, oldest first.

    Start without ``after``; each page returns ``next_cursor``. Keep it and pass it as ``after``
    next time: that is the acknowledgement (the same cursor always returns the same events, so a
    client that crashes before storing it reads the page again and deduplicates on ``id``).
    """

    permission_classes = [HasScope]
    required_scope = ApiScope.READ

    class EventListInput(serializers.Serializer):
        after = serializers.CharField(required=False, allow_blank=True, max_length=500)
        limit = serializers.IntegerField(required=False, min_value=1, max_value=500, default=100)
        type = serializers.ListField(
            child=serializers.ChoiceField(choices=list(EventType.ALL)), required=False
        )

    class EventPageOutput(serializers.Serializer):
        events = EventOutput(many=True)
        next_cursor = serializers.CharField(allow_null=True)
        has_more = serializers.BooleanField()

    @extend_schema(
        parameters=[
            OpenApiParameter("after", str, description="A next_cursor from an earlier page."),
            OpenApiParameter("limit", int, description="At most this many events (1-500)."),
            OpenApiParameter(
                "type", str, many=True, enum=list(EventType.ALL), description="Only these types."
            ),
        ],
        responses=EventPageOutput,
        operation_id="events_list",
    )
    def get(self, request: Request) -> Response:
        data = {**request.query_params.dict(), "type": request.query_params.getlist("type")}
        if not data["type"]:
            del data["type"]
        params = self.EventListInput(data=data)
        params.is_valid(raise_exception=True)
        try:
            page = selectors.list_events_after(
                cursor=params.validated_data.get("after") or None,
                limit=params.validated_data["limit"],
                types=params.validated_data.get("type"),
            )
        except selectors.CursorError as exc:
            raise ValidationError({"after": [str(exc)]}) from exc
        return Response(
            {
                "events": [selectors.event_envelope(e) for e in page.events],
                "next_cursor": page.next_cursor,
                "has_more": page.has_more,
            }
        )


class DeliveryOutput(serializers.Serializer):
    endpoint = serializers.CharField()
    state = serializers.ChoiceField(choices=["pending", "delivered", "parked", "cancelled"])
    attempts = serializers.IntegerField()
    delivered_at = serializers.DateTimeField(allow_null=True)
    last_status = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField(allow_blank=True)


class EventDetailOutput(EventOutput):
    deliveries = DeliveryOutput(many=True, help_text="Where it went, per endpoint.")


class EventDetailApi(APIView):
    """One event by its id, with its delivery to each endpoint; another tenant's event is a 404
    like a missing one."""

    permission_classes = [HasScope]
    required_scope = ApiScope.READ

    @extend_schema(responses=EventDetailOutput, operation_id="event_retrieve")
    def get(self, request: Request, event_id: str) -> Response:
        event = selectors.get_event(webhook_id=event_id)
        deliveries = DeliveryOutput(selectors.list_event_deliveries(event=event), many=True).data
        return Response({**selectors.event_envelope(event), "deliveries": deliveries})
