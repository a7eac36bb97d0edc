"""Messaging operations for client systems."""

from __future__ import annotations

from datetime import datetime

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.audit import record_event
from messaging.credentials import request_certificate_rotation
from messaging.evidence.keys import key_id, public_key_pem
from messaging.evidence.packs import pack_path, request_pack
from messaging.models import EvidencePack, PackState
from messaging.store.ids import ID_EPOCH
from tenants import selectors
from tenants.authentication import HasScope, api_client
from tenants.models import ApiScope


class CertificateRotateApi(APIView):
    """Queue the canary and cut-over of a staged certificate (202); poll the certificate for the
    outcome (``status`` becomes ``active``, or ``last_canary_ok`` false with the reason)."""

    permission_classes = [HasScope]
    required_scope = ApiScope.CERTIFICATES

    @extend_schema(
        request=None,
        responses={202: inline_serializer("RotationQueued", {"detail": serializers.CharField()})},
        operation_id="certificates_rotate",
    )
    def post(self, request: Request, certificate_id: str) -> Response:
        certificate = selectors.get_certificate(certificate_id=certificate_id)
        request_certificate_rotation(certificate=certificate, actor=api_client(request).label)
        return Response(
            {
                "detail": "rotation queued: a canary runs first; the cut-over follows only if it passes"
            },
            status=status.HTTP_202_ACCEPTED,
        )


class EvidencePackOutput(serializers.Serializer):
    id = serializers.UUIDField()
    state = serializers.CharField()
    progress = serializers.IntegerField(help_text="0 to 100 while the pack is being built")
    stage = serializers.CharField()
    period_from = serializers.DateTimeField()
    period_to = serializers.DateTimeField()
    interfaces = serializers.ListField(child=serializers.CharField())
    include_payloads = serializers.BooleanField()
    requested_by = serializers.CharField()
    requested_at = serializers.DateTimeField()
    message_count = serializers.IntegerField(allow_null=True)
    size = serializers.IntegerField(allow_null=True)
    sha256 = serializers.CharField(help_text="SHA-256 of the ZIP once ready")
    expires_at = serializers.DateTimeField(allow_null=True)
    error = serializers.CharField()


class EvidencePackCreateApi(APIView):
    """Request an evidence pack for a period (202): poll it until ``state`` is ``ready``, then
    download it. The period must end before the ledger's settle delay (a couple of minutes ago)."""

    permission_classes = [HasScope]
    required_scope = ApiScope.READ

    class EvidencePackInput(serializers.Serializer):
        period_from = serializers.DateTimeField()
        period_to = serializers.DateTimeField()
        interfaces = serializers.ListField(
            child=serializers.RegexField(r"^(IF-\d{3}|REP-\d{3}[A-Z]?)$"),
            required=False,
            default=list,
        )
        include_payloads = serializers.BooleanField(default=False)

        def validate_period_from(self, value: datetime) -> datetime:
            if value < ID_EPOCH:
                raise serializers.ValidationError(
                    f"must be on or after {ID_EPOCH.isoformat()}: Busbar holds nothing older"
                )
            return value

    @extend_schema(
        request=EvidencePackInput,
        responses={202: EvidencePackOutput},
        operation_id="evidence_packs_create",
    )
    def post(self, request: Request) -> Response:
        data = self.EvidencePackInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            pack = request_pack(requested_by=api_client(request).label, **data.validated_data)
        except ValueError as exc:
            raise serializers.ValidationError({"period_to": [str(exc)]}) from exc
        return Response(EvidencePackOutput(pack).data, status=status.HTTP_202_ACCEPTED)


class EvidencePackDetailApi(APIView):
    """One evidence pack's state and progress."""

    permission_classes = [HasScope]
    required_scope = ApiScope.READ

    @extend_schema(responses=EvidencePackOutput, operation_id="evidence_packs_retrieve")
    def get(self, request: Request, pack_id: str) -> Response:
        pack = EvidencePack.objects.filter(id=pack_id).first()
        if pack is None:
            raise NotFound("no such evidence pack")
        return Response(EvidencePackOutput(pack).data)


class EvidencePackDownloadApi(APIView):
    """The pack's ZIP (application/zip) once ready; every download is audited."""

    permission_classes = [HasScope]
    required_scope = ApiScope.READ

    @extend_schema(
        responses={(200, "application/zip"): OpenApiTypes.BINARY},
        operation_id="evidence_packs_download",
    )
    def get(self, request: Request, pack_id: str) -> FileResponse:
        pack = EvidencePack.objects.filter(id=pack_id, state=PackState.READY).first()
        if pack is None or not pack_path(pack).exists():
            raise NotFound("no such evidence pack, or it is not ready")
        record_event(
            action="evidence.pack_downloaded",
            actor=api_client(request).label,
            object_type="evidence_pack",
            object_id=pack.id,
        )
        return FileResponse(pack_path(pack).open("rb"), as_attachment=True, filename=pack.file_name)


class EvidenceKeyApi(APIView):
    """Busbar's evidence public key (Ed25519, PEM) and its id: compare it with a copy obtained by
    another route before trusting a pack."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        responses=inline_serializer(
            "EvidenceKey",
            {"key_id": serializers.CharField(), "public_key_pem": serializers.CharField()},
        ),
        operation_id="evidence_key_retrieve",
    )
    def get(self, request: Request) -> Response:
        return Response({"key_id": key_id(), "public_key_pem": public_key_pem().decode()})
