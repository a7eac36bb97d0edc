"""Console forms: they check input shape only; the services decide."""

from __future__ import annotations

from typing import Any

from django import forms

from tenants.models import (
    ApiScope,
    CertificatePurpose,
    Channel,
    ChannelStatus,
    Connection,
    Environment,
    Role,
)

MAX_UPLOAD_BYTES = 64 * 1024


class BoundedFileField(forms.FileField):
    def clean(self, data: Any, initial: Any = None) -> Any:
        upload = super().clean(data, initial)
        if upload and upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(
                f"the file is {upload.size} bytes; at most {MAX_UPLOAD_BYTES} are accepted"
            )
        return upload


class CsrForm(forms.Form):
    connection = forms.TypedChoiceField(coerce=int)
    purpose = forms.ChoiceField(
        choices=[
            (CertificatePurpose.SIGNING, "Message signing"),
            (CertificatePurpose.MTLS, "mTLS client"),
        ]
    )
    common_name = forms.CharField(max_length=253, help_text="e.g. dip.acme.example")
    organization = forms.CharField(max_length=200)
    organizational_unit = forms.CharField(max_length=200, required=False)
    country = forms.CharField(max_length=2, initial="GB")
    key_size = forms.TypedChoiceField(
        coerce=int, choices=[(3072, "RSA 3072"), (2048, "RSA 2048"), (4096, "RSA 4096")]
    )

    def __init__(self, *args: Any, connections: list[Connection], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["connection"].choices = [(c.id, str(c)) for c in connections]  # type: ignore[attr-defined]


class ImportForm(forms.Form):
    connection = forms.TypedChoiceField(coerce=int)
    purpose = forms.ChoiceField(choices=CertificatePurpose.choices)
    bundle = BoundedFileField(help_text="PEM (certificate and key) or PKCS#12 (.p12/.pfx)")
    password = forms.CharField(widget=forms.PasswordInput, required=False, strip=False)
    label = forms.CharField(max_length=100, required=False)

    def __init__(self, *args: Any, connections: list[Connection], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["connection"].choices = [(c.id, str(c)) for c in connections]  # type: ignore[attr-defined]


class SignedCertificateForm(forms.Form):
    certificate = BoundedFileField(help_text="The CA's signed certificate (PEM), with its chain")


class RevokeForm(forms.Form):
    reason = forms.CharField(max_length=200)


class ApiKeyForm(forms.Form):
    connection = forms.TypedChoiceField(coerce=int)
    api_key = forms.CharField(
        label="New DIP API key",
        widget=forms.PasswordInput,
        strip=True,
        min_length=8,
        max_length=200,
        help_text="From the DIP portal's API Keys page. Stored encrypted; never shown again.",
    )

    def __init__(self, *args: Any, connections: list[Connection], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["connection"].choices = [(c.id, str(c)) for c in connections]  # type: ignore[attr-defined]


class ApiCredentialForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Which client system uses it, e.g. billing")
    scopes = forms.MultipleChoiceField(
        choices=ApiScope.choices, widget=forms.CheckboxSelectMultiple
    )
    environment = forms.ChoiceField(choices=Environment.choices, initial=Environment.UIT)


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    email = forms.EmailField(
        help_text="Where a new account's invitation goes; an existing account keeps its own"
    )
    roles = forms.MultipleChoiceField(choices=Role.choices, widget=forms.CheckboxSelectMultiple)


class RolesForm(forms.Form):
    roles = forms.MultipleChoiceField(choices=Role.choices, widget=forms.CheckboxSelectMultiple)


class DownstreamEndpointForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Which system receives them, e.g. billing")
    url = forms.CharField(
        label="URL",
        max_length=500,
        help_text="https://... on a public address; Busbar signs every request (Standard Webhooks)",
    )
    event_types = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple)

    def __init__(self, *args: Any, event_types: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["event_types"].choices = event_types  # type: ignore[attr-defined]


class ChannelChangeForm(forms.Form):
    """A proposed change to a channel: only the fields filled in (or ticked) are changed."""

    status = forms.ChoiceField(
        choices=[("", "(unchanged)"), *ChannelStatus.choices], required=False
    )
    expected_cadence_minutes = forms.IntegerField(
        label="Expected cadence (minutes)",
        required=False,
        min_value=1,
        max_value=31 * 24 * 60,
        help_text="Alert when nothing has arrived for this long.",
    )
    clear_cadence = forms.BooleanField(label="No expected cadence", required=False)
    pinned_schema_version = forms.CharField(
        label="Pinned schema version", max_length=10, required=False
    )
    unpin_schema_version = forms.BooleanField(label="Unpin the schema version", required=False)
    rotate_webhook = forms.BooleanField(
        label="New webhook URL (register it with the DIP afterwards)", required=False
    )
    reason = forms.CharField(max_length=500)

    def __init__(self, *args: Any, channel: Channel, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.channel = channel

    def changes(self) -> dict[str, Any]:
        data = self.cleaned_data
        changes: dict[str, Any] = {}
        if data.get("status"):
            changes["status"] = data["status"]
        if data.get("clear_cadence"):
            changes["expected_cadence"] = None
        elif data.get("expected_cadence_minutes"):
            changes["expected_cadence"] = data["expected_cadence_minutes"] * 60
        if data.get("unpin_schema_version"):
            changes["pinned_schema_version"] = ""
        elif data.get("pinned_schema_version"):
            changes["pinned_schema_version"] = data["pinned_schema_version"]
        if data.get("rotate_webhook"):
            changes["webhook"] = True
        return changes
