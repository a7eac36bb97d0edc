"""Reconciliation results for client systems: each run's verdicts, newest first."""

from __future__ import annotations

from django.db.models import Q
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.tenancy import current_environment
from messaging.reconciliation.models import Control, ReconciliationResult
from tenants.authentication import HasScope
from tenants.models import ApiScope


class ReconciliationResultListApi(APIView):
    """The latest reconciliation verdicts (``?control=`` one control; ``?limit=`` up to 500).
    An API key sees its environment's channels and the tenant-wide verdicts."""

    permission_classes = [HasScope]
    required_scope = ApiScope.READ

    class ResultOutput(serializers.Serializer):
        id = serializers.IntegerField()
        run_id = serializers.UUIDField()
        run_at = serializers.DateTimeField()
        control = serializers.CharField()
        channel_id = serializers.IntegerField(allow_null=True)
        interface_id = serializers.CharField()
        direction = serializers.CharField()
        window_from = serializers.DateTimeField()
        window_to = serializers.DateTimeField()
        expected = serializers.IntegerField()
        found = serializers.IntegerField()
        status = serializers.CharField()
        summary = serializers.CharField()
        detail = serializers.DictField()

    class QueryInput(serializers.Serializer):
        control = serializers.ChoiceField(choices=Control.choices, required=False)
        limit = serializers.IntegerField(min_value=1, max_value=500, default=100)

    @extend_schema(
        parameters=[
            OpenApiParameter("control", str, enum=Control.values),
            OpenApiParameter("limit", int),
        ],
        responses=ResultOutput(many=True),
        operation_id="reconciliation_results_list",
    )
    def get(self, request: Request) -> Response:
        query = self.QueryInput(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = ReconciliationResult.objects.order_by("-run_at", "-id")
        environment = current_environment()
        if environment is not None:
            rows = rows.filter(
                Q(channel__isnull=True) | Q(channel__connection__environment=environment)
            )
        if query.validated_data.get("control"):
            rows = rows.filter(control=query.validated_data["control"])
        results = rows[: query.validated_data["limit"]]
        return Response(self.ResultOutput(results, many=True).data)
