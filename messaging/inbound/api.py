"""The same reads as the console, for client systems (``read`` scope): messages searched by what
they are known by, one message with its timeline, findings and payload, and the exception queue (``messaging.exceptions.api``)."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from messaging.inbound.selectors import MessageFilter, get_message_detail, list_messages
from messaging.outbound.api import MessageDetailApi as OutboundMessageDetailApi
from messaging.outbound.api import ReadOrSubmit, outbound_message_response
from messaging.store.selectors import get_message
from tenants.authentication import HasScope, api_client
from tenants.models import ApiScope, Direction

PAGE_SIZE = 100


class MessageOutput(serializers.Serializer):
    id = serializers.IntegerField()
    direction = serializers.CharField()
    interface_id = serializers.CharField()
    event_code = serializers.CharField()
    schema_version = serializers.CharField()
    transaction_id = serializers.CharField(allow_null=True)
    sender_unique_reference = serializers.CharField()
    correlation_id = serializers.CharField()
    mpan = serializers.CharField()
    state = serializers.CharField()
    attempts = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    state_changed_at = serializers.DateTimeField()
    connection_id = serializers.IntegerField()
    channel_id = serializers.IntegerField(allow_null=True)


class MessageListApi(APIView):
    """The tenant's messages, newest first; ``before`` (the last id of a page) pages on."""

    permission_classes = [HasScope]
    required_scope = ApiScope.READ

    class FilterInput(serializers.Serializer):
        q = serializers.CharField(required=False, allow_blank=True, max_length=200)
        interface = serializers.CharField(required=False, allow_blank=True, max_length=8)
        state = serializers.CharField(required=False, allow_blank=True, max_length=20)
        direction = serializers.ChoiceField(
            choices=["inbound", "outbound"], required=False, allow_blank=True
        )
        date_from = serializers.DateField(required=False)
        date_to = serializers.DateField(required=False)
        before = serializers.IntegerField(required=False, min_value=1)

    @extend_schema(
        parameters=[FilterInput],
        responses=MessageOutput(many=True),
        operation_id="messages_list",
    )
    def get(self, request: Request) -> Response:
        params = self.FilterInput(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        filters = MessageFilter(
            text=data.get("q", ""),
            interface_id=data.get("interface", ""),
            state=data.get("state", ""),
            direction=data.get("direction", ""),
            date_from=data.get("date_from"),
            date_to=data.get("date_to"),
            before_id=data.get("before"),
        )
        return Response(
            MessageOutput(list_messages(filters=filters, limit=PAGE_SIZE), many=True).data
        )


class MessageDetailApi(APIView):
    """One message of either direction; another tenant's message is a 404 like a missing one.

    An outbound message answers as the outbound API describes it (its state, every request that
    carried it to the DIP, its timeline), for the read scope or the submit scope of the system
    that sent it. An inbound message answers with its metadata, timeline, findings, exceptions,
    the exact payload and its normalised events, for the read scope only."""

    permission_classes = [ReadOrSubmit]

    @extend_schema(
        responses={200: OutboundMessageDetailApi.OutboundMessageOutput},
        operation_id="messages_read",
        parameters=[OpenApiParameter("message_id", int, OpenApiParameter.PATH)],
        description="An outbound message as submitted and sent; an inbound message (read scope) "
        "with its timeline, findings, exceptions, payload and normalised events.",
    )
    def get(self, request: Request, message_id: int) -> Response:
        message = get_message(message_id=message_id)
        if message is None:
            raise Http404("no such message")
        if message.direction == Direction.OUTBOUND:
            return outbound_message_response(message_id=message_id)
        if ApiScope.READ not in api_client(request).scopes:
            raise PermissionDenied("this API key lacks the read scope")
        detail = get_message_detail(message_id=message_id, with_content=True)
        if detail is None:
            raise Http404("no such message")
        return Response(
            {
                **MessageOutput(detail.message).data,
                "timeline": [
                    {"at": t.at, "from": t.from_state, "to": t.to_state, "actor": t.actor,
                     "reason": t.reason}
                    for t in detail.timeline
                ],
                "findings": [
                    {"stage": f.stage, "severity": f.severity, "code": f.code, "path": f.path,
                     "text": f.text, "rule": f.rule, "registry_version": f.registry_version}
                    for f in detail.findings
                ],
                "exceptions": [
                    {"id": e.id, "code": e.code, "category": e.category, "severity": e.severity,
                     "owner_queue": e.owner_queue, "to_act": e.to_act, "state": e.state,
                     "title": e.title}
                    for e in detail.exceptions
                ],
                "signed_by": detail.signer.__dict__ if detail.signer else None,
                "raw": detail.raw,
                "events": [
                    {"id": str(e.uid), "type": e.type, "mapping": e.mapping,
                     "mapping_version": e.mapping_version, "payload": e.payload}
                    for e in detail.events
                ],
            }
        )  # fmt: skip


__all__ = ["MessageDetailApi", "MessageListApi"]
