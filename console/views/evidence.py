"""Evidence packs: request one for a period, watch it being built, download it; and the page
that publishes Busbar's evidence public key for auditors."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from django import forms
from django.conf import settings
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from console.views.home import signed_in_user, tenant_required
from core.audit import record_event
from messaging.evidence import keys, packs
from messaging.models import EvidencePack, PackState
from tenants import selectors
from tenants.models import Role

# Who may ask for packs (auditors, and tenant admins for their own assurance), and whose packs may
# carry raw payloads (roles with content rights).
PACK_ROLES = (Role.AUDITOR, Role.TENANT_ADMIN)
PAYLOAD_ROLES = (Role.AUDITOR, Role.MESSAGE_OPERATOR)


class PackRequestForm(forms.Form):
    period_from = forms.DateField(label="From (UTC, inclusive)")
    period_to = forms.DateField(label="To (UTC, inclusive)")
    interfaces = forms.CharField(
        label="Interfaces", required=False, help_text="e.g. IF-021, IF-033; empty for all"
    )
    include_payloads = forms.BooleanField(label="Include raw payloads", required=False)

    def clean_interfaces(self) -> list[str]:
        values = [
            v.strip().upper() for v in self.cleaned_data["interfaces"].split(",") if v.strip()
        ]
        bad = [v for v in values if not (v.startswith(("IF-", "REP-")) and len(v) <= 8)]
        if bad:
            raise forms.ValidationError(f"not an interface id: {', '.join(bad)}")
        return values

    def clean(self) -> dict:
        data = super().clean() or {}
        start, end = data.get("period_from"), data.get("period_to")
        if start and end and end < start:
            raise forms.ValidationError("the period ends before it starts")
        return data


def _may_request(request: HttpRequest) -> bool:
    return selectors.user_has_role(request.membership, *PACK_ROLES)  # type: ignore[attr-defined]


@tenant_required
@require_http_methods(["GET", "POST"])
def evidence_list(request: HttpRequest) -> HttpResponse:
    """The tenant's packs, newest first, and the request form (post, redirect, get)."""
    if not _may_request(request):
        return render(request, "console/403.html", {"need": "auditor or tenant admin"}, status=403)
    may_include_payloads = selectors.user_has_role(request.membership, *PAYLOAD_ROLES)  # type: ignore[attr-defined]
    form = PackRequestForm(request.POST or None)
    error = ""
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        period_from = datetime.combine(data["period_from"], time.min, tzinfo=UTC)
        period_to = datetime.combine(data["period_to"], time.min, tzinfo=UTC) + timedelta(days=1)
        settled = timezone.now() - timedelta(seconds=settings.BUSBAR_EVIDENCE_SETTLE_SECONDS)
        try:
            pack = packs.request_pack(
                requested_by=signed_in_user(request).get_username(),
                period_from=period_from,
                period_to=min(period_to, settled),
                interfaces=data["interfaces"],
                include_payloads=bool(data["include_payloads"]) and may_include_payloads,
            )
        except ValueError as exc:
            error = str(exc)
        else:
            return redirect(f"{request.path}?requested={pack.id}")
    pack_list = list(EvidencePack.objects.order_by("-requested_at")[:50])
    context = {
        "form": form,
        "error": error,
        "packs": pack_list,
        "working": any(p.state in (PackState.QUEUED, PackState.RUNNING) for p in pack_list),
        "may_include_payloads": may_include_payloads,
        "requested": request.GET.get("requested", ""),
    }
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "console/evidence/list.html#pack-table", context)
    return render(request, "console/evidence/list.html", context)


@tenant_required
@require_GET
def evidence_download(request: HttpRequest, pack_id: str) -> FileResponse:
    """The pack's ZIP; every download lands in the audit log."""
    if not _may_request(request):
        raise Http404
    pack = EvidencePack.objects.filter(id=pack_id, state=PackState.READY).first()
    if pack is None or not packs.pack_path(pack).exists():
        raise Http404
    record_event(
        action="evidence.pack_downloaded",
        actor=signed_in_user(request).get_username(),
        object_type="evidence_pack",
        object_id=pack.id,
    )
    return FileResponse(
        packs.pack_path(pack).open("rb"), as_attachment=True, filename=pack.file_name
    )


@require_GET
def evidence_key(request: HttpRequest) -> HttpResponse:
    """Busbar's evidence public key, published for anyone (an auditor should compare it with the
    copy they got from Busbar by another route before trusting a pack)."""
    pem = keys.public_key_pem()
    if request.GET.get("format") == "pem":
        return HttpResponse(pem, content_type="application/x-pem-file")
    return render(
        request, "console/evidence/key.html", {"pem": pem.decode(), "key_id": keys.key_id()}
    )
