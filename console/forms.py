"""Console forms: they check input shape only; the services decide."""

from __future__ import annotations

from typing import Any

from django import forms

from tenants.models import ApiScope, CertificatePurpose, Connection, Environment, Role

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
    email = forms.EmailField(required=False, help_text="Needed for a new account")
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
