"""Django admin for Busbar's staff: onboarding (provider admins) and a metadata view across
tenants (provider support).

Staff act for no tenant, so under RLS the runtime role shows them nothing. Lists therefore read
through the ``support`` database role, whose column grants leave out secrets and payloads (the
querysets defer those columns); writes go through the same services as everything else.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from core.models import AuditEvent
from tenants import services
from tenants.authentication import in_staff_role
from tenants.models import Channel, Connection, DipIdentity, Environment, StaffRole, Tenant


class SupportReadOnlyAdmin(admin.ModelAdmin):
    """Read-only, across tenants, through the support role."""

    deferred: tuple[str, ...] = ()

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).using("support").defer(*self.deferred)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return in_staff_role(request, StaffRole.PROVIDER_SUPPORT, StaffRole.PROVIDER_ADMIN)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class OnboardingForm(forms.Form):
    slug = forms.SlugField(max_length=50)
    name = forms.CharField(max_length=200)
    mpid = forms.CharField(label="MPID", max_length=4)
    role_code = forms.CharField(max_length=5, help_text="DIP role code, e.g. SUP")
    dip_id = forms.CharField(label="DIP ID", max_length=10)
    environment = forms.ChoiceField(choices=Environment.choices, initial=Environment.UIT)
    dip_base_url = forms.URLField(label="DIP base URL")
    dcp_id = forms.CharField(label="DCP ID", max_length=10, required=False)
    admin_username = forms.CharField(max_length=150)
    admin_email = forms.EmailField()
    admin_password = forms.CharField(widget=forms.PasswordInput)


@admin.register(Tenant)
class TenantAdmin(SupportReadOnlyAdmin):
    list_display = ("name", "slug", "is_active", "created_at")
    search_fields = ("name", "slug")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return in_staff_role(request, StaffRole.PROVIDER_ADMIN)

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        """Onboarding replaces the model form: tenant, identity, connection and first admin."""
        if not self.has_add_permission(request):
            return HttpResponse(status=403)
        form = OnboardingForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                tenant = services.onboard_tenant(
                    **form.cleaned_data, actor=f"admin:{request.user.get_username()}"
                )
            except ValidationError as exc:
                for message in exc.messages:
                    form.add_error(None, message)
            else:
                messages.success(request, f"Onboarded {tenant.name}.")
                return HttpResponseRedirect(reverse("admin:tenants_tenant_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Onboard a tenant",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/tenants/onboard.html", context)


@admin.register(DipIdentity)
class DipIdentityAdmin(SupportReadOnlyAdmin):
    list_display = ("dip_id", "mpid", "role_code", "tenant", "created_at")
    list_select_related = ("tenant",)
    search_fields = ("dip_id", "mpid")


@admin.register(Connection)
class ConnectionAdmin(SupportReadOnlyAdmin):
    deferred = ("api_key_encrypted",)
    list_display = ("identity", "environment", "dip_base_url", "dcp_id", "tenant")
    list_select_related = ("tenant", "identity")
    list_filter = ("environment",)


@admin.register(Channel)
class ChannelAdmin(SupportReadOnlyAdmin):
    deferred = ("webhook_token",)
    list_display = ("interface_id", "direction", "status", "tenant", "connection_id")
    list_select_related = ("tenant",)
    list_filter = ("direction", "status", "interface_id")


@admin.register(AuditEvent)
class AuditEventAdmin(SupportReadOnlyAdmin):
    list_display = ("occurred_at", "tenant_id", "category", "actor", "action", "object_type")
    list_filter = ("category", "action")
    search_fields = ("actor", "action", "object_id")
