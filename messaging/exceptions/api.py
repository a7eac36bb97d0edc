"""The exception queue for client systems (``read`` scope): the queue with its owner, SLA and
assignment, filtered as the console filters it, and one exception with its handling history.
Handling itself is done by people in the console (it is recorded against a person)."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from messaging.exceptions.selectors import (
    ExceptionFilter,
    filter_exceptions,
    get_exception,
    list_handling,
)
from tenants.authentication import HasScope
from tenants.models import ApiScope

PAGE_SIZE = 100


class ExceptionOutput(serializers.Serializer):
    id = serializers.IntegerField()
    message_id = serializers.IntegerField(allow_null=True)
    direction = serializers.CharField()
    interface_id = serializers.CharField()
    transaction_id = serializers.CharField()
    category = serializers.CharField()
    severity = serializers.CharField()
    owner_queue = serializers.CharField()
    to_act = serializers.CharField()
    code = serializers.CharField()
    title = serializers.CharField()
    state = serializers.CharField()
    occurrences = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    sla_due_at = serializers.DateTimeField(allow_null=True)
    assignee = serializers.CharField(source="assignee.user.username", allow_null=True, default=None)
    resolution_code = serializers.CharField()
    resolution = serializers.CharField()
    resolved_at = serializers.DateTimeField(allow_null=True)


class ExceptionListApi(APIView):
    """The exception queue (open ones by default; ``state=all`` for every one). ``whose=yours``
    lists what is the client's to act on; ``overdue=1`` those past their SLA."""

    permission_classes = [HasScope]
    required_scope = ApiScope.READ

    class FilterInput(serializers.Serializer):
        state = serializers.ChoiceField(
            choices=["open", "retrying", "resolved", "all"], required=False
        )
        category = serializers.ChoiceField(
            choices=["technical", "market_operations", "data_quality", "awaiting_dependency"],
            required=False,
        )
        severity = serializers.ChoiceField(
            choices=["fatal", "error", "warning", "info"], required=False
        )
        whose = serializers.ChoiceField(
            choices=["yours", "provider", "market_party"], required=False
        )
        overdue = serializers.BooleanField(required=False)
        interface = serializers.CharField(required=False, max_length=8)

    @extend_schema(
        parameters=[FilterInput],
        responses=ExceptionOutput(many=True),
        operation_id="exceptions_list",
    )
    def get(self, request: Request) -> Response:
        params = self.FilterInput(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        filters = ExceptionFilter(
            state=data.get("state", "open"),
            category=data.get("category", ""),
            severity=data.get("severity", ""),
            whose=data.get("whose", ""),
            overdue=data.get("overdue", False),
            interface_id=data.get("interface", ""),
        )
        rows = (
            filter_exceptions(filters)
            .select_related("assignee__user")
            .order_by("-created_at", "-id")[:PAGE_SIZE]
        )
        return Response(ExceptionOutput(rows, many=True).data)


class ExceptionDetailApi(APIView):
    """One exception with its handling history (assignments, comments, resolution, reprocess)."""

    permission_classes = [HasScope]
    required_scope = ApiScope.READ

    class HandlingOutput(serializers.Serializer):
        at = serializers.DateTimeField()
        action = serializers.CharField()
        actor = serializers.CharField()
        text = serializers.CharField()
        detail = serializers.JSONField()

    class DetailOutput(ExceptionOutput):
        history = serializers.ListField(child=serializers.DictField())

    @extend_schema(
        responses=DetailOutput,
        operation_id="exception_retrieve",
        parameters=[OpenApiParameter("exception_id", int, OpenApiParameter.PATH)],
    )
    def get(self, request: Request, exception_id: int) -> Response:
        exc = get_exception(exception_id=exception_id)
        if exc is None:
            raise Http404("no such exception")
        return Response(
            {
                **ExceptionOutput(exc).data,
                "history": self.HandlingOutput(list_handling(exception_id=exc.id), many=True).data,
            }
        )
