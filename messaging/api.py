"""Messaging operations for client systems."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from messaging.credentials import request_certificate_rotation
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
