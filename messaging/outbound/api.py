"""The submission API: client systems hand Busbar messages for a channel and read their state.

A client sends the DIP CustomBlock and the envelope facts only it knows; Busbar fills in the rest
when it sends. Every write takes an optional ``Idempotency-Key`` (see
``messaging.outbound.idempotency``). A refused submission lists every problem with its JSON path
and stores nothing.
"""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from messaging.outbound import selectors
from messaging.outbound.enrich import Problem
from messaging.outbound.idempotency import Answer, IdempotencyError, run_idempotent
from messaging.outbound.services import SubmissionInvalid, submit_messages
from tenants import selectors as tenant_selectors
from tenants.authentication import ApiClient, HasScope, api_client
from tenants.models import ApiScope

MAX_BATCH = 1000

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description=(
        "Any unique string (a UUID). The same key with the same body returns the first answer; "
        "with another body it is a 422; while the first request runs, a 409. Kept 24 hours."
    ),
)


class SubmissionInput(serializers.Serializer):
    """One message as a client submits it (documentation of the checked fields)."""

    event_code = serializers.CharField(help_text="S0 event code, e.g. ActivePower")
    custom_block = serializers.JSONField(
        allow_null=True, help_text="the DIP CustomBlock (null for an interface without one)"
    )
    primary_recipients = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="DIP IDs"
    )
    correlation_id = serializers.CharField(required=False, allow_null=True)
    mpan = serializers.CharField(required=False, allow_null=True, help_text="13-digit MPAN core")
    distributor_dip_id = serializers.CharField(required=False, allow_null=True)
    gsp_group_id = serializers.CharField(required=False, allow_null=True)
    business_key = serializers.CharField(
        required=False,
        allow_null=True,
        help_text="orders messages; defaults to the MPAN and interface",
    )
    sub_text = serializers.CharField(required=False, allow_null=True)
    supersede = serializers.BooleanField(
        required=False,
        default=False,
        help_text=(
            "a later version: unsent earlier messages with the same business key are superseded "
            "(recorded on their timelines) and never sent"
        ),
    )
    urgency = serializers.ChoiceField(
        choices=["normal", "urgent"],
        required=False,
        default="normal",
        help_text=(
            "urgent messages are sent, and drained after an outage, before normal ones, but "
            "never before an earlier message with the same business key"
        ),
    )


class BatchInput(serializers.Serializer):
    messages = SubmissionInput(many=True)


ProblemOutput = inline_serializer(
    "SubmissionProblem",
    {"path": serializers.CharField(), "message": serializers.CharField()},
    many=True,
)
InvalidOutput = inline_serializer(
    "SubmissionInvalid",
    {"detail": serializers.CharField(), "errors": ProblemOutput},
)
AcceptedOutput = inline_serializer(
    "SubmissionAccepted",
    {
        "messages": inline_serializer(
            "AcceptedMessage",
            {
                "id": serializers.IntegerField(),
                "state": serializers.CharField(),
                "url": serializers.CharField(),
            },
            many=True,
        )
    },
)


def _problems(problems: list[Problem]) -> Answer:
    return Answer(
        status=status.HTTP_400_BAD_REQUEST,
        body={
            "detail": f"The submission has {len(problems)} problem(s); nothing was stored.",
            "errors": [p.as_dict() for p in problems],
        },
    )


def _respond(answer: Answer) -> Response:
    response = Response(answer.body, status=answer.status)
    if answer.replayed:
        response["Idempotent-Replayed"] = "true"
    return response


class _Submit(APIView):
    permission_classes = [HasScope]
    required_scope = ApiScope.SUBMIT

    def _items(self, data: Any) -> tuple[list[Any] | None, str, list[Problem]]:
        raise NotImplementedError

    def post(self, request: Request, channel_id: int) -> Response:
        client = api_client(request)
        channel = tenant_selectors.get_channel(channel_id=channel_id)
        data = request.data
        items, path, problems = self._items(data)
        if problems or items is None:
            return _respond(_problems(problems))

        def handler() -> Answer:
            ids = submit_messages(channel=channel, items=items, actor=client.label, path=path)
            return Answer(
                status=status.HTTP_201_CREATED,
                body={
                    "messages": [
                        {
                            "id": message_id,
                            "state": "accepted",
                            "url": reverse("api:message-detail", args=[message_id]),
                        }
                        for message_id in ids
                    ]
                },
            )

        try:
            answer = run_idempotent(
                key=request.headers.get("Idempotency-Key"),
                method=request.method or "POST",
                path=request.path,
                data=data,
                handler=handler,
            )
        except SubmissionInvalid as exc:
            answer = _problems(exc.problems)
        except IdempotencyError as exc:
            body: dict[str, Any] = {"detail": exc.detail}
            if exc.status == status.HTTP_400_BAD_REQUEST:
                body["errors"] = [{"path": "Idempotency-Key", "message": exc.detail}]
            answer = Answer(status=exc.status, body=body)
        return _respond(answer)


class MessageSubmitApi(_Submit):
    """Submit one message for an outbound channel (201: stored as ``accepted``; a worker sends
    it). Busbar fills the envelope: sender reference, timestamp, environment, sender and DCP."""

    def _items(self, data: Any) -> tuple[list[Any] | None, str, list[Problem]]:
        if not isinstance(data, dict):
            return None, "$", [Problem("$", "the body is one message, a JSON object")]
        return [data], "$", []

    @extend_schema(
        request=SubmissionInput,
        parameters=[IDEMPOTENCY_HEADER],
        responses={201: AcceptedOutput, 400: InvalidOutput, 409: None, 422: None},
        operation_id="messages_submit",
    )
    def post(self, request: Request, channel_id: int) -> Response:
        return super().post(request, channel_id)


class MessageBatchSubmitApi(_Submit):
    """Submit many messages for one outbound channel in one request (all stored, or none)."""

    def _items(self, data: Any) -> tuple[list[Any] | None, str, list[Problem]]:
        messages = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(messages, list) or not messages:
            return None, "", [Problem("$.messages", "a non-empty array of messages")]
        if len(messages) > MAX_BATCH:
            return None, "", [Problem("$.messages", f"at most {MAX_BATCH} messages per request")]
        extra = sorted(set(data) - {"messages"})
        if extra:
            return None, "", [Problem(f"$.{name}", "unknown field") for name in extra]
        return messages, "$.messages[{index}]", []

    @extend_schema(
        request=BatchInput,
        parameters=[IDEMPOTENCY_HEADER],
        responses={201: AcceptedOutput, 400: InvalidOutput, 409: None, 422: None},
        operation_id="messages_submit_batch",
    )
    def post(self, request: Request, channel_id: int) -> Response:
        return super().post(request, channel_id)


class ReadOrSubmit(permissions.BasePermission):
    """Reading a message needs the read scope, or the submit scope of the system that sent it."""

    message = "this API key lacks the read or submit scope"

    def has_permission(self, request: Request, view: object) -> bool:
        user = request.user
        return isinstance(user, ApiClient) and bool(
            {ApiScope.READ, ApiScope.SUBMIT} & set(user.scopes)
        )


MESSAGE_FIELDS = (
    "id",
    "state",
    "interface_id",
    "event_code",
    "correlation_id",
    "mpan",
    "business_key",
    "urgent",
    "sender_unique_reference",
    "transaction_id",
    "attempts",
    "created_at",
    "state_changed_at",
    "next_attempt_at",
    "last_error",
)


class MessageDetailApi(APIView):
    """An outbound message with its full state, every attempt (the requests that carried it, with
    the certificates used and the answer) and its timeline."""

    permission_classes = [ReadOrSubmit]

    class OutboundMessageOutput(serializers.Serializer):
        id = serializers.IntegerField()
        state = serializers.CharField()
        interface_id = serializers.CharField()
        event_code = serializers.CharField()
        correlation_id = serializers.CharField()
        mpan = serializers.CharField()
        business_key = serializers.CharField()
        urgent = serializers.BooleanField()
        sender_unique_reference = serializers.CharField()
        transaction_id = serializers.CharField(allow_null=True)
        attempts = serializers.IntegerField()
        created_at = serializers.DateTimeField()
        state_changed_at = serializers.DateTimeField()
        next_attempt_at = serializers.DateTimeField(allow_null=True)
        last_error = serializers.CharField()
        exchanges = serializers.ListField(child=serializers.DictField())
        timeline = serializers.ListField(child=serializers.DictField())

    @extend_schema(responses=OutboundMessageOutput, operation_id="messages_read")
    def get(self, request: Request, message_id: int) -> Response:
        return outbound_message_response(message_id=message_id)


def outbound_message_response(*, message_id: int) -> Response:
    """The outbound message's answer (also what /api/v1/messages/<id>/ answers for an outbound
    message: that URL serves both directions, see messaging.inbound.api.MessageDetailApi)."""
    detail = selectors.get_outbound_detail(message_id=message_id)
    message = detail.message
    data = {
        **{name: getattr(message, name) for name in MESSAGE_FIELDS},
        "exchanges": [
            {
                "started_at": e.started_at,
                "url": e.url,
                "http_status": e.http_status,
                "outcome": e.outcome,
                "error": e.error,
                "elapsed_ms": e.elapsed_ms,
                "body_sha256": e.body_sha256,
                "signing_certificate_fingerprint": e.signing_certificate_fingerprint,
                "mtls_certificate_fingerprint": e.mtls_certificate_fingerprint,
                "signature_date": e.signature_date,
            }
            for e in detail.exchanges
        ],
        "timeline": [
            {
                "at": t.at,
                "from_state": t.from_state,
                "to_state": t.to_state,
                "actor": t.actor,
                "reason": t.reason,
                "detail": t.detail,
            }
            for t in detail.timeline
        ],
    }
    return Response(MessageDetailApi.OutboundMessageOutput(data).data)
