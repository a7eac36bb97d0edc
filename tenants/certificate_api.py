"""Certificates for client systems: inventory metadata for any reader; for keys with the
``certificates`` scope, the whole life a certificate admin has in the console: import, a key and
CSR generated in Busbar, the CA's signed certificate attached, first activation, revocation
(rotation is ``messaging.api``'s, as a worker canaries it). No endpoint ever returns key material;
a CSR is public by design and is returned."""

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
    csr_pem = serializers.CharField(
        help_text="the certificate signing request, while the signed certificate is awaited"
    )


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


class CertificateCsrApi(APIView):
    """Generate a key in Busbar (encrypted at once, never returned) and its CSR for a CA to sign."""

    permission_classes = [HasScope]
    required_scope = ApiScope.CERTIFICATES

    class CsrInput(serializers.Serializer):
        connection_id = serializers.IntegerField()
        purpose = serializers.ChoiceField(
            choices=[CertificatePurpose.SIGNING, CertificatePurpose.MTLS]
        )
        common_name = serializers.CharField(max_length=64)
        organization = serializers.CharField(max_length=64)
        country = serializers.CharField(max_length=2, default="GB")
        organizational_unit = serializers.CharField(max_length=64, required=False, default="")
        key_size = serializers.ChoiceField(choices=[2048, 3072, 4096], default=3072)

    @extend_schema(
        request=CsrInput, responses={201: CertificateOutput}, operation_id="certificates_csr"
    )
    def post(self, request: Request) -> Response:
        payload = self.CsrInput(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        requested = certificates.generate_key_and_csr(
            connection=selectors.get_connection(connection_id=data["connection_id"]),
            purpose=data["purpose"],
            common_name=data["common_name"],
            organization=data["organization"],
            country=data["country"],
            organizational_unit=data["organizational_unit"],
            key_size=data["key_size"],
            actor=api_client(request).label,
        )
        return Response(CertificateOutput(requested).data, status=status.HTTP_201_CREATED)


class CertificateSignedApi(APIView):
    """Attach the CA's signed certificate to a key Busbar generated; the pair is then staged."""

    permission_classes = [HasScope]
    required_scope = ApiScope.CERTIFICATES

    class SignedInput(serializers.Serializer):
        certificate_pem = serializers.CharField(max_length=64 * 1024)

    @extend_schema(
        request=SignedInput, responses=CertificateOutput, operation_id="certificates_signed"
    )
    def post(self, request: Request, certificate_id: str) -> Response:
        certificate = selectors.get_certificate(certificate_id=certificate_id)
        payload = self.SignedInput(data=request.data)
        payload.is_valid(raise_exception=True)
        staged = certificates.import_signed_certificate(
            certificate=certificate,
            pem=payload.validated_data["certificate_pem"].encode(),
            actor=api_client(request).label,
        )
        return Response(CertificateOutput(staged).data)


class CertificateActivateApi(APIView):
    """Put a staged certificate into use where its connection has none active for the purpose.
    Replacing an active certificate is a rotation (``certificates_rotate``), canaried first."""

    permission_classes = [HasScope]
    required_scope = ApiScope.CERTIFICATES

    @extend_schema(request=None, responses=CertificateOutput, operation_id="certificates_activate")
    def post(self, request: Request, certificate_id: str) -> Response:
        certificate = selectors.get_certificate(certificate_id=certificate_id)
        active = certificates.activate_first_certificate(
            certificate=certificate, actor=api_client(request).label
        )
        return Response(CertificateOutput(active).data)
