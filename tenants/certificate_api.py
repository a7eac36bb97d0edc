"""Certificates for client systems: inventory metadata for any reader, import and revocation for
keys with the ``certificates`` scope. No endpoint ever returns key material."""

from __future__ import annotations

import base64
import binascii

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants import certificates, selectors
from tenants.authentication import HasScope, api_client
from tenants.models import ApiScope, CertificatePurpose


class CertificateOutput(serializers.Serializer):
    id = serializers.UUIDField()
    connection_id = serializers.IntegerField()
    purpose = serializers.CharField()
    status = serializers.CharField()
    subject = serializers.CharField()
    issuer = serializers.CharField()
    serial = serializers.CharField()
    fingerprint_sha256 = serializers.CharField()
    not_before = serializers.DateTimeField(allow_null=True)
    not_after = serializers.DateTimeField(allow_null=True)
    key_type = serializers.CharField()
    key_size = serializers.IntegerField(allow_null=True)
    activated_at = serializers.DateTimeField(allow_null=True)
    overlap_until = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


class CertificateListApi(APIView):
    permission_classes = [HasScope]

    @property
    def required_scope(self) -> str:
        return ApiScope.READ if self.request.method == "GET" else ApiScope.CERTIFICATES

    class ImportInput(serializers.Serializer):
        connection_id = serializers.IntegerField()
        purpose = serializers.ChoiceField(choices=CertificatePurpose.choices)
        bundle_base64 = serializers.CharField(help_text="PEM text or PKCS#12 bytes, base64-encoded")
        password = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
        # A field may share the name of Field.label: DRF moves declared fields aside.
        label = serializers.CharField(required=False, allow_blank=True, max_length=100)  # type: ignore[assignment]

        def validate_bundle_base64(self, value: str) -> bytes:
            try:
                data = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise serializers.ValidationError("not valid base64") from exc
            if len(data) > 64 * 1024:
                raise serializers.ValidationError("the bundle is larger than 64 KiB")
            return data

    @extend_schema(responses=CertificateOutput(many=True), operation_id="certificates_list")
    def get(self, request: Request) -> Response:
        return Response(CertificateOutput(selectors.list_certificates(), many=True).data)

    @extend_schema(
        request=ImportInput, responses={201: CertificateOutput}, operation_id="certificates_import"
    )
    def post(self, request: Request) -> Response:
        payload = self.ImportInput(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        imported = certificates.import_certificate(
            connection=selectors.get_connection(connection_id=data["connection_id"]),
            purpose=data["purpose"],
            data=data["bundle_base64"],
            password=data.get("password") or None,
            label=data.get("label", ""),
            actor=api_client(request).label,
        )
        return Response(CertificateOutput(imported).data, status=status.HTTP_201_CREATED)


class CertificateRevokeApi(APIView):
    permission_classes = [HasScope]
    required_scope = ApiScope.CERTIFICATES

    class CertificateImportInput(serializers.Serializer):
        reason = serializers.CharField(max_length=200)

    @extend_schema(
        request=CertificateImportInput,
        responses=CertificateOutput,
        operation_id="certificates_revoke",
    )
    def post(self, request: Request, certificate_id: str) -> Response:
        certificate = selectors.get_certificate(certificate_id=certificate_id)
        payload = self.CertificateImportInput(data=request.data)
        payload.is_valid(raise_exception=True)
        revoked = certificates.revoke_certificate(
            certificate=certificate,
            reason=payload.validated_data["reason"],
            actor=api_client(request).label,
        )
        return Response(CertificateOutput(revoked).data)
