"""Certificates: every member sees status and expiry; certificate admins see details and act."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import wraps

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from console.expiry import expiry_gauge
from console.forms import ApiKeyForm, CsrForm, ImportForm, RevokeForm, SignedCertificateForm
from console.views.home import signed_in_user, tenant_required
from messaging import exchanges
from messaging.credentials import pending_rotation, request_certificate_rotation
from tenants import certificates, selectors, services
from tenants.models import Certificate, CertificateStatus, Role


def _is_certificate_admin(request: HttpRequest) -> bool:
    return selectors.user_has_role(request.membership, Role.CERTIFICATE_ADMIN)  # type: ignore[attr-defined]


def _actor(request: HttpRequest) -> str:
    return request.user.get_username()


def _forbidden(request: HttpRequest) -> HttpResponse:
    return render(request, "console/403.html", {"need": "certificate admin"}, status=403)


def _rows(now: datetime) -> list[dict]:
    return [
        {"certificate": certificate, "expiry": expiry_gauge(certificate.not_after, now=now)}
        for certificate in selectors.list_certificates()
    ]


@tenant_required
def certificate_list(request: HttpRequest) -> HttpResponse:
    connections = selectors.list_connections()
    admin = _is_certificate_admin(request)
    lookup = request.GET.get("message", "").strip()
    context = {
        "lookup": lookup,
        "lookup_results": exchanges.find_exchanges_for_message(reference=lookup)
        if lookup
        else None,
        "rows": _rows(timezone.now()),
        "is_certificate_admin": admin,
        "connections": connections,
        # Three forms on one page: each its own id prefix, so every label points at its own field.
        "api_key_form": ApiKeyForm(connections=connections, auto_id="apikey_%s") if admin else None,
        "csr_form": CsrForm(connections=connections, auto_id="csr_%s") if admin else None,
        "import_form": ImportForm(connections=connections, auto_id="import_%s") if admin else None,
        "notifications": selectors.list_notifications(membership=request.membership),  # type: ignore[attr-defined]
    }
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "console/certificates/list.html#certificate-table", context)
    return render(request, "console/certificates/list.html", context)


@tenant_required
@require_POST
def certificate_csr(request: HttpRequest) -> HttpResponse:
    if not _is_certificate_admin(request):
        return _forbidden(request)
    form = CsrForm(request.POST, connections=selectors.list_connections())
    if form.is_valid():
        data = form.cleaned_data
        try:
            created = certificates.generate_key_and_csr(
                connection=selectors.get_connection(connection_id=data.pop("connection")),
                **data,
                actor=_actor(request),
                owner=signed_in_user(request),
            )
        except ValidationError as exc:
            messages.error(request, "; ".join(exc.messages))
        else:
            messages.success(
                request, "Key generated and encrypted. Download the CSR and send it to your CA."
            )
            return redirect("console:certificate-detail", certificate_id=created.id)
    else:
        messages.error(request, _form_errors(form))
    return redirect("console:certificates")


@tenant_required
@require_POST
def certificate_import(request: HttpRequest) -> HttpResponse:
    if not _is_certificate_admin(request):
        return _forbidden(request)
    form = ImportForm(request.POST, request.FILES, connections=selectors.list_connections())
    if form.is_valid():
        data = form.cleaned_data
        try:
            imported = certificates.import_certificate(
                connection=selectors.get_connection(connection_id=data["connection"]),
                purpose=data["purpose"],
                data=data["bundle"].read(),
                password=data["password"] or None,
                label=data["label"],
                actor=_actor(request),
                owner=signed_in_user(request),
            )
        except ValidationError as exc:
            messages.error(request, "The certificate was not imported: " + "; ".join(exc.messages))
        else:
            messages.success(request, f"Imported; it is {imported.get_status_display().lower()}.")
            return redirect("console:certificate-detail", certificate_id=imported.id)
    else:
        messages.error(request, _form_errors(form))
    return redirect("console:certificates")


@tenant_required
@require_POST
def connection_api_key(request: HttpRequest) -> HttpResponse:
    """Replace a connection's DIP API key (part of its credential set, beside its certificates)."""
    if not _is_certificate_admin(request):
        return _forbidden(request)
    try:
        data = _valid(ApiKeyForm(request.POST, connections=selectors.list_connections()))
        connection = selectors.get_connection(connection_id=data["connection"])
        services.update_connection(
            connection=connection, api_key=data["api_key"], actor=_actor(request)
        )
    except ValidationError as exc:
        messages.error(request, "The API key was not changed: " + "; ".join(exc.messages))
    else:
        messages.success(
            request, f"DIP API key replaced for {connection}; it ends …{connection.api_key_hint}."
        )
    return redirect("console:certificates")


@tenant_required
def certificate_detail(request: HttpRequest, certificate_id: str) -> HttpResponse:
    certificate = selectors.get_certificate(certificate_id=certificate_id)
    admin = _is_certificate_admin(request)
    context = {
        "certificate": certificate,
        "is_certificate_admin": admin,
        "exchanges": exchanges.list_exchanges_with_certificate(certificate=certificate)
        if admin
        else [],
        "messages_sent": exchanges.count_messages_with_certificate(certificate=certificate),
        "signed_form": SignedCertificateForm(),
        "revoke_form": RevokeForm(),
        **_rotation_context(certificate),
        "demo_ca": settings.BUSBAR_DEMO_DIPSIM_CA
        if certificate.status == CertificateStatus.REQUESTED
        else "",
    }
    if request.htmx and admin:  # type: ignore[attr-defined]
        if certificate.status != CertificateStatus.STAGED:
            # The queued rotation has finished: the whole page changes, not just the section.
            response = HttpResponse(status=204)
            response["HX-Refresh"] = "true"
            return response
        return render(request, "console/certificates/detail.html#rotation", context)
    return render(request, "console/certificates/detail.html", context)


def _rotation_context(certificate: Certificate) -> dict:
    """What the page needs to say which way a certificate goes into use, and how far along.

    A staged certificate goes in by rotation (canary first) when its connection already has an
    active one for the purpose, or by plain activation when it has none: the page offers the one
    that applies. While a rotation waits for its worker, the page says so and offers nothing.
    An active certificate that replaced another names it and the end of its overlap.
    """
    same_slot = Certificate.objects.filter(
        connection_id=certificate.connection_id, purpose=certificate.purpose
    ).exclude(id=certificate.id)
    current = same_slot.filter(status=CertificateStatus.ACTIVE).order_by("-activated_at").first()
    return {
        "current_certificate": current,
        "rotation_queued_at": pending_rotation(certificate=certificate),
        "overlapping": same_slot.filter(
            status=CertificateStatus.RETIRING, overlap_until__gt=timezone.now()
        ).order_by("-overlap_until")
        if certificate.status == CertificateStatus.ACTIVE
        else [],
    }


@tenant_required
@require_GET
def certificate_csr_download(request: HttpRequest, certificate_id: str) -> HttpResponse:
    # Look up first: another tenant's certificate is a 404 whatever the user's role.
    certificate = selectors.get_certificate(certificate_id=certificate_id)
    if not _is_certificate_admin(request):
        return _forbidden(request)
    response = HttpResponse(certificate.csr_pem, content_type="application/pkcs10")
    response["Content-Disposition"] = f'attachment; filename="busbar-{certificate.id}.csr"'
    return response


def certificate_admin_action(
    view: Callable[[HttpRequest, Certificate], str],
) -> Callable[..., HttpResponse]:
    """A POST on one certificate by a certificate admin: the certificate is looked up first (so
    another tenant's is a 404 whatever the user's role), then the role is checked (403), then the
    view calls its service and returns what to tell the user; a refusal is shown as the error."""

    @tenant_required
    @require_POST
    @wraps(view)
    def wrapper(request: HttpRequest, certificate_id: str) -> HttpResponse:
        certificate = selectors.get_certificate(certificate_id=certificate_id)
        if not _is_certificate_admin(request):
            return _forbidden(request)
        try:
            messages.success(request, view(request, certificate))
        except ValidationError as exc:
            messages.error(request, "; ".join(exc.messages))
        return redirect("console:certificate-detail", certificate_id=certificate.id)

    return wrapper


def _valid(form: forms.Form) -> dict:
    if not form.is_valid():
        raise ValidationError(_form_errors(form))
    return form.cleaned_data


@certificate_admin_action
def certificate_signed_upload(request: HttpRequest, certificate: Certificate) -> str:
    data = _valid(SignedCertificateForm(request.POST, request.FILES))
    certificates.import_signed_certificate(
        certificate=certificate, pem=data["certificate"].read(), actor=_actor(request)
    )
    return "Signed certificate attached; the pair is staged."


@certificate_admin_action
def certificate_activate(request: HttpRequest, certificate: Certificate) -> str:
    """First activation (nothing active yet). Replacing an active one goes through rotation."""
    certificates.activate_first_certificate(certificate=certificate, actor=_actor(request))
    return "The certificate is now active."


@certificate_admin_action
def certificate_rotate(request: HttpRequest, certificate: Certificate) -> str:
    """Queue a canary and cut-over; the page shows the outcome once a worker has run it."""
    request_certificate_rotation(certificate=certificate, actor=_actor(request))
    return (
        "Rotation queued: a canary request to the DIP runs with this certificate first, and "
        "the cut-over happens only if it passes. Refresh to see the outcome."
    )


@certificate_admin_action
def certificate_revoke(request: HttpRequest, certificate: Certificate) -> str:
    data = _valid(RevokeForm(request.POST))
    certificates.revoke_certificate(
        certificate=certificate, reason=data["reason"], actor=_actor(request)
    )
    used = exchanges.count_messages_with_certificate(certificate=certificate)
    return (
        f"Revoked: it will not be used again. {used} message{'s' if used != 1 else ''} went to the "
        "DIP under it; the requests are listed below."
    )


def _form_errors(form: object) -> str:
    return "; ".join(
        f"{field}: {' '.join(errors)}" if field != "__all__" else " ".join(errors)
        for field, errors in form.errors.items()  # type: ignore[attr-defined]
    )
