from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django_otp.admin import OTPAdminSite
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)

from core import health
from messaging import api as messaging_api
from tenants import api as tenant_api
from tenants import certificate_api

api_patterns = [
    path("identities/", tenant_api.IdentityListApi.as_view(), name="identity-list"),
    path(
        "channels/<int:channel_id>/", tenant_api.ChannelDetailApi.as_view(), name="channel-detail"
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
    # Swagger UI, to try operations with a key ("Authorize"); its script is served from its own
    # URL rather than inline, so a strict Content-Security-Policy allows it.
    path("docs/try/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs-try"),
]

# Staff pages need a verified second factor, not only a password.
admin.site.__class__ = OTPAdminSite

# Unknown paths under /api/ answer JSON, not an HTML page.
handler404 = "core.api.not_found"
handler500 = "core.api.server_error"

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("api/v1/", include((api_patterns, "api"))),
    path("staff/admin/", admin.site.urls),
    path("", include("console.urls")),
]
