from __future__ import annotations

from django.urls import path

from console.views import (
    account,
    activity,
    auth,
    certificates,
    downstream,
    evidence,
    exceptions,
    home,
    invitations,
    messages,
    outbound,
    replays,
    settings,
    support,
    webhooks,
)

app_name = "console"

urlpatterns = [
    path("", home.home, name="home"),
    path("login/", auth.login_view, name="login"),
    path("logout/", auth.logout_view, name="logout"),
    path("tenant/switch/", auth.switch_tenant, name="tenant-switch"),
    path("login/verify/", auth.login_verify, name="login-verify"),
    path("account/second-factor/", account.second_factor, name="account-mfa"),
    path("flows/", home.area, {"area": "flows"}, name="flows"),
    path("messages/", messages.message_list, name="messages"),
    path("messages/<int:message_id>/", messages.message_detail, name="message-detail"),
    path("exceptions/", exceptions.exception_list, name="exceptions"),
    path("exceptions/bulk/", exceptions.exception_bulk, name="exception-bulk"),
    path("exceptions/<int:exception_id>/", exceptions.exception_detail, name="exception-detail"),
    path("exceptions/<int:exception_id>/act/", exceptions.exception_act, name="exception-act"),
    path("replays/", replays.replay_list, name="replays"),
    path("replays/new/", replays.replay_new, name="replay-new"),
    path("replays/<int:replay_id>/", replays.replay_detail, name="replay-detail"),
    path("replays/<int:replay_id>/decide/", replays.replay_decide, name="replay-decide"),
    path("outbound/", outbound.outbound_list, name="outbound"),
    path("outbound/submit/", outbound.outbound_submit, name="outbound-submit"),
    path("outbound/<int:message_id>/", outbound.outbound_detail, name="outbound-detail"),
    path(
        "outbound/<int:message_id>/resubmit/",
        outbound.outbound_resubmit,
        name="outbound-resubmit",
    ),
    path("certificates/", certificates.certificate_list, name="certificates"),
    path("certificates/csr/", certificates.certificate_csr, name="certificate-csr"),
    path("certificates/import/", certificates.certificate_import, name="certificate-import"),
    path("certificates/api-key/", certificates.connection_api_key, name="connection-api-key"),
    path(
        "certificates/<uuid:certificate_id>/",
        certificates.certificate_detail,
        name="certificate-detail",
    ),
    path(
        "certificates/<uuid:certificate_id>/csr.pem",
        certificates.certificate_csr_download,
        name="certificate-csr-download",
    ),
    path(
        "certificates/<uuid:certificate_id>/signed/",
        certificates.certificate_signed_upload,
        name="certificate-signed-upload",
    ),
    path(
        "certificates/<uuid:certificate_id>/activate/",
        certificates.certificate_activate,
        name="certificate-activate",
    ),
    path(
        "certificates/<uuid:certificate_id>/rotate/",
        certificates.certificate_rotate,
        name="certificate-rotate",
    ),
    path(
        "certificates/<uuid:certificate_id>/revoke/",
        certificates.certificate_revoke,
        name="certificate-revoke",
    ),
    path("evidence/", evidence.evidence_list, name="evidence"),
    path("evidence/key/", evidence.evidence_key, name="evidence-key"),
    path("evidence/<uuid:pack_id>/download/", evidence.evidence_download, name="evidence-download"),
    path("settings/", settings.settings_page, name="settings"),
    path(
        "settings/connections/<int:connection_id>/webhooks/",
        webhooks.webhook_register,
        name="webhook-register",
    ),
    path("settings/api-keys/", settings.api_key_issue, name="api-key-issue"),
    path("settings/second-factor/", settings.second_factor_policy, name="second-factor-policy"),
    path(
        "settings/api-keys/<int:credential_id>/revoke/",
        settings.api_key_revoke,
        name="api-key-revoke",
    ),
    path("settings/members/", settings.member_add, name="member-add"),
    path("settings/members/<int:membership_id>/roles/", settings.member_roles, name="member-roles"),
    path(
        "settings/members/<int:membership_id>/remove/", settings.member_remove, name="member-remove"
    ),
    path("downstream/", downstream.downstream, name="downstream"),
    path("downstream/add/", downstream.endpoint_add, name="downstream-add"),
    path(
        "downstream/<int:endpoint_id>/rotate/",
        downstream.endpoint_rotate,
        name="downstream-rotate",
    ),
    path(
        "downstream/<int:endpoint_id>/enable/",
        downstream.endpoint_enable,
        name="downstream-enable",
    ),
    path("activity/", activity.activity, name="activity"),
    path("support/", support.support_overview, name="support"),
    path("account/password/", account.password_change, name="account-password"),
    path(
        "account/set-password/<str:uidb64>/<str:token>/",
        account.set_password,
        name="set-password",
    ),
    path(
        "account/second-factor/enrol/<uuid:tenant_id>/<str:token>/",
        account.second_factor_enrol,
        name="mfa-enrol",
    ),
    path("invitations/", invitations.invitations, name="invitations"),
    path(
        "invitations/<int:invitation_id>/accept/",
        invitations.invitation_accept,
        name="invitation-accept",
    ),
    path(
        "invitations/<int:invitation_id>/decline/",
        invitations.invitation_decline,
        name="invitation-decline",
    ),
    path(
        "settings/members/<int:membership_id>/enrolment-link/",
        settings.member_enrolment_link,
        name="member-enrolment-link",
    ),
]
