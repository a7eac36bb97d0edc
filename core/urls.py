from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django_otp.admin import OTPAdminSite
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView

from core import health
from messaging import api as messaging_api
from messaging.outbound import api as outbound_api
from tenants import api as tenant_api
from tenants import certificate_api

api_patterns = [
    path("identities/", tenant_api.IdentityListApi.as_view(), name="identity-list"),
    path(
        "channels/<int:channel_id>/", tenant_api.ChannelDetailApi.as_view(), name="channel-detail"
    ),
    path(
        "channels/<int:channel_id>/messages/",
        outbound_api.MessageSubmitApi.as_view(),
        name="message-submit",
    ),
    path(
        "channels/<int:channel_id>/messages/batch/",
        outbound_api.MessageBatchSubmitApi.as_view(),
        name="message-submit-batch",
    ),
    path(
        "messages/<int:message_id>/", outbound_api.MessageDetailApi.as_view(), name="message-detail"
    ),
    path("certificates/", certificate_api.CertificateListApi.as_view(), name="certificate-list"),
    path(
        "certificates/<uuid:certificate_id>/revoke/",
        certificate_api.CertificateRevokeApi.as_view(),
        name="certificate-revoke",
    ),
    path(
        "certificates/<uuid:certificate_id>/rotate/",
        messaging_api.CertificateRotateApi.as_view(),
        name="certificate-rotate",
    ),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularRedocView.as_view(url_name="api:schema"), name="docs"),
]

# Staff pages need a verified second factor, not only a password.
admin.site.__class__ = OTPAdminSite

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("api/v1/", include((api_patterns, "api"))),
    path("staff/admin/", admin.site.urls),
    path("", include("console.urls")),
]
