"""The tenant's identities, connections and channels, as client systems see them."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants import channel_changes, selectors
from tenants.authentication import HasScope
from tenants.models import ApiScope


class IdentityListApi(APIView):
    """The tenant's DIP identities with their connections and channels."""

    permission_classes = [HasScope]
    required_scope = ApiScope.READ

    class ChannelOutput(serializers.Serializer):
        id = serializers.IntegerField()
        interface_id = serializers.CharField()
        direction = serializers.CharField()
        status = serializers.CharField()

    class ConnectionOutput(serializers.Serializer):
        id = serializers.IntegerField()
        environment = serializers.CharField()
        dip_base_url = serializers.CharField()
        dcp_id = serializers.CharField()
        channels = serializers.ListField(child=serializers.DictField())

    class IdentityOutput(serializers.Serializer):
        id = serializers.IntegerField()
        mpid = serializers.CharField()
        role_code = serializers.CharField()
        dip_id = serializers.CharField()
        connections = serializers.ListField(child=serializers.DictField())

    @extend_schema(responses=IdentityOutput(many=True), operation_id="identities_list")
    def get(self, request: Request) -> Response:
        channels_by_connection: dict[int, list[dict]] = {}
        for channel in selectors.list_channels():
            channels_by_connection.setdefault(channel.connection_id, []).append(
                self.ChannelOutput(channel).data
            )
        connections_by_identity: dict[int, list[dict]] = {}
        for connection in selectors.list_connections():
            data = dict(
                self.ConnectionOutput(
                    {
                        **connection.__dict__,
                        "channels": channels_by_connection.get(connection.id, []),
                    }
                ).data
            )
            connections_by_identity.setdefault(connection.identity_id, []).append(data)
        identities = [
            {
                **self.IdentityOutput(
                    {
                        **identity.__dict__,
                        "connections": connections_by_identity.get(identity.id, []),
                    }
                ).data
            }
            for identity in selectors.list_identities()
        ]
        return Response(identities)


class ChannelDetailApi(APIView):
    """One channel of the tenant; another tenant's channel is a 404 like a missing one."""

    permission_classes = [HasScope]
    required_scope = ApiScope.READ

    class ChannelDetailOutput(serializers.Serializer):
        id = serializers.IntegerField()
        interface_id = serializers.CharField()
        direction = serializers.CharField()
        status = serializers.CharField()
        environment = serializers.CharField(source="connection.environment")
        dip_id = serializers.CharField(source="connection.identity.dip_id")
        expected_cadence = serializers.DurationField(allow_null=True)
        pinned_schema_version = serializers.CharField()

    @extend_schema(responses=ChannelDetailOutput, operation_id="channel_retrieve")
    def get(self, request: Request, channel_id: int) -> Response:
        return Response(self.ChannelDetailOutput(selectors.get_channel(channel_id=channel_id)).data)


class ChannelChangeListApi(APIView):
    """A channel's change history, newest first: each proposal, its diff, who decided and when.
    Changes are proposed and approved by people in the console (four eyes), not by API keys."""

    permission_classes = [HasScope]
    required_scope = ApiScope.READ

    class ChannelChangeOutput(serializers.Serializer):
        id = serializers.IntegerField()
        state = serializers.CharField()
        before = serializers.DictField()
        after = serializers.DictField()
        reason = serializers.CharField()
        requires_approval = serializers.BooleanField()
        proposed_by = serializers.CharField(source="proposed_by_name")
        proposed_at = serializers.DateTimeField()
        decided_by = serializers.CharField(source="decided_by_name")
        decided_at = serializers.DateTimeField(allow_null=True)
        applied_at = serializers.DateTimeField(allow_null=True)
        rolled_back_by = serializers.CharField(source="rolled_back_by_name")
        rolled_back_at = serializers.DateTimeField(allow_null=True)

    @extend_schema(responses=ChannelChangeOutput(many=True), operation_id="channel_changes_list")
    def get(self, request: Request, channel_id: int) -> Response:
        channel = selectors.get_channel(channel_id=channel_id)
        changes = channel_changes.list_channel_changes(channel=channel, limit=200)
        return Response(self.ChannelChangeOutput(changes, many=True).data)
