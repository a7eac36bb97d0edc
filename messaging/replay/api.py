"""Replays for client systems (``read`` scope): what was replayed, why, who asked and who
approved, the checks and the outcome. Requests and approvals are made by people (console)."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from messaging.replay.selectors import get_replay, list_replays
from tenants.authentication import HasScope
from tenants.models import ApiScope


class ReplayOutput(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    connection_id = serializers.IntegerField()
    production = serializers.BooleanField()
    reason_code = serializers.CharField()
    reason_text = serializers.CharField()
    message_ids = serializers.ListField(child=serializers.IntegerField())
    interface_id = serializers.CharField()
    window_from = serializers.DateTimeField(allow_null=True)
    window_to = serializers.DateTimeField(allow_null=True)
    state = serializers.CharField()
    requested_by = serializers.CharField()
    requested_at = serializers.DateTimeField()
    decided_by = serializers.CharField()
    decided_at = serializers.DateTimeField(allow_null=True)
    decision_note = serializers.CharField()
    checks = serializers.ListField(child=serializers.DictField())
    outcome = serializers.DictField()
    completed_at = serializers.DateTimeField(allow_null=True)


class ReplayListApi(APIView):
    """The tenant's replays, newest first."""

    permission_classes = [HasScope]
    required_scope = ApiScope.READ

    @extend_schema(responses=ReplayOutput(many=True), operation_id="replays_list")
    def get(self, request: Request) -> Response:
        return Response(ReplayOutput(list_replays(limit=100), many=True).data)


class ReplayDetailApi(APIView):
    permission_classes = [HasScope]
    required_scope = ApiScope.READ

    @extend_schema(
        responses=ReplayOutput,
        operation_id="replay_retrieve",
        parameters=[OpenApiParameter("replay_id", int, OpenApiParameter.PATH)],
    )
    def get(self, request: Request, replay_id: int) -> Response:
        replay = get_replay(replay_id=replay_id)
        if replay is None:
            raise Http404("no such replay")
        return Response(ReplayOutput(replay).data)
