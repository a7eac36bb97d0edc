from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.utils.csp import CSP
from django.views.decorators.csp import csp_override
from django.views.generic import RedirectView
from django_otp.admin import OTPAdminSite
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)

from core import health
from messaging import api as messaging_api
from messaging.events import api as events_api
from messaging.exceptions import api as exceptions_api
from messaging.inbound import api as inbound_api
from messaging.outbound import api as outbound_api
from messaging.reconciliation import api as reconciliation_api
from messaging.replay import api as replay_api
from tenants import api as tenant_api
from tenants import certificate_api

# Redoc draws with styled-components (inline <style>) and searches in a blob: worker; its page
# (templates/drf_spectacular/redoc.html) still runs no inline script.
DOCS_CSP: dict[str, Any] = {
    **dict(settings.SECURE_CSP),
    "style-src": [CSP.SELF, CSP.UNSAFE_INLINE],
    "worker-src": [CSP.SELF, "blob:"],
}

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
        "channels/<int:channel_id>/changes/",
        tenant_api.ChannelChangeListApi.as_view(),
        name="channel-change-list",
    ),
    path(
        "reconciliation/results/",
        reconciliation_api.ReconciliationResultListApi.as_view(),
        name="reconciliation-result-list",
    ),
    path("certificates/", certificate_api.CertificateListApi.as_view(), name="certificate-list"),
    path("certificates/csr/", certificate_api.CertificateCsrApi.as_view(), name="certificate-csr"),
    path(
        "certificates/<uuid:certificate_id>/signed/",
        certificate_api.CertificateSignedApi.as_view(),
        name="certificate-signed",
    ),
    path(
        "certificates/<uuid:certificate_id>/activate/",
        certificate_api.CertificateActivateApi.as_view(),
        name="certificate-activate",
    ),
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
    path(
        "evidence-packs/",
        messaging_api.EvidencePackCreateApi.as_view(),
        name="evidence-pack-create",
    ),
    path(
        "evidence-packs/<uuid:pack_id>/",
        messaging_api.EvidencePackDetailApi.as_view(),
        name="evidence-pack-detail",
    ),
    path(
        "evidence-packs/<uuid:pack_id>/download/",
        messaging_api.EvidencePackDownloadApi.as_view(),
        name="evidence-pack-download",
    ),
    path("evidence/key/", messaging_api.EvidenceKeyApi.as_view(), name="evidence-key"),
    path("events/", events_api.EventListApi.as_view(), name="event-list"),
    path("events/<str:event_id>/", events_api.EventDetailApi.as_view(), name="event-detail"),
    path("messages/", inbound_api.MessageListApi.as_view(), name="message-list"),
    # Both directions: an outbound message answers as the outbound API describes it.
    path(
        "messages/<int:message_id>/",
        inbound_api.MessageDetailApi.as_view(),
        name="message-detail",
    ),
    path("exceptions/", exceptions_api.ExceptionListApi.as_view(), name="exception-list"),
    path(
        "exceptions/<int:exception_id>/",
        exceptions_api.ExceptionDetailApi.as_view(),
        name="exception-detail",
    ),
    path("replays/", replay_api.ReplayListApi.as_view(), name="replay-list"),
    path("replays/<int:replay_id>/", replay_api.ReplayDetailApi.as_view(), name="replay-detail"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "docs/",
        csp_override(DOCS_CSP)(SpectacularRedocView.as_view(url_name="api:schema")),
        name="docs",
    ),
    # Swagger UI, to try operations with a key ("Authorize"); its script is served from its own
    # URL rather than inline, so a strict Content-Security-Policy allows it.
    path(
        "docs/try/",
        csp_override(DOCS_CSP)(SpectacularSwaggerSplitView.as_view(url_name="api:schema")),
        name="docs-try",
    ),
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
    # Browsers ask for /favicon.ico whatever the page says; send them to the console's icon.
    path(
        "favicon.ico",
        RedirectView.as_view(url=static("console/favicon.svg"), permanent=True),
        name="favicon",
    ),
    path("api/v1/", include((api_patterns, "api"))),
    path("staff/admin/", admin.site.urls),
    path("", include("console.urls")),
]
