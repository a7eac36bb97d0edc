"""Staged validation of DIP messages, and the schema registry it validates against.

A library: it reads no message store and writes nothing. The inbound pipeline (and outbound
submission) call it and store the findings (``record_findings`` accepts :class:`Finding` as is).

Entry points::

    from messaging.validation import ValidationContext, validate_message, validate_batch
    from messaging.validation.selectors import get_registry, get_tenant_rules

    registry = get_registry(tenant_id=tenant.id)        # the tenant's pinned spec version
    context = ValidationContext(
        dip_ids=frozenset({"1000000001"}), role="SUP", environment="UIT",
        channel="IF-021", history=my_key_history, rules=get_tenant_rules(tenant_id=tenant.id),
    )
    outcome = validate_message(body_bytes, context=context, registry=registry)
    outcomes = validate_batch(list_of_bytes, context=context, registry=registry)

``validate_message(payload, *, context, registry, stages=ALL_STAGES) -> ValidationOutcome``
    ``payload`` is bytes, text, the parsed payload or the wire item ``{"payload": {...}}``. Never
    raises for bad input. ``validate_batch`` does the same for many messages of one connection
    with a single business-key history call, in-batch duplicates included.

``ValidationOutcome(findings, ok, interface, schema_version, event_code, spec_version,
business_keys, payload, stopped_at)``: ``ok`` is False when a finding is ``fatal`` or ``error``.

``Finding(stage, severity, code, path, text, rule)``: ``stage`` syntactic/contextual/business;
``severity`` fatal (stops the message at that stage) / error (invalid, later stages still run) /
warning / info (never stop a message); ``path`` a JSON path; ``rule`` id and version.

``ValidationContext(dip_ids, role, environment, direction="in", channel=None, history=None,
rules=TenantRules(), now=None)``. ``history`` is a :class:`KeyHistory`: called with a list of
business keys, it returns ``{key: KeyRecord(version, sender_reference)}`` for the newest message
already held per key (the inbound pipeline implements it against the store).

The stages:
- syntactic: the bytes are JSON, S0 names an interface, schema version and event code the
  registry knows (and the channel's interface), and the payload meets that variant's schema.
  Every failure is fatal.
- contextual: environment tag matches the connection (fatal); inbound, one of the connection's
  DIP IDs is a primary, secondary or always recipient (error) and the role is one the interface
  is sent to (warning); outbound, the sender is the connection (fatal) in its role (error); MPAN
  check digit (severity per tenant, default warning: the DIP does not enforce it and market test
  data often fails it, so refusing would drop messages a participant must hold; the Registration
  Service rejects real bad MPANs with REG0000); sender timestamp; IF-021 settlement days (midnight
  UTC, ended, exactly the 48 UTC half hours by period end, no repeats; clock-change days and late
  days reported as info); duplicates, out-of-order and same-version conflicts by business key.
- business: per-tenant rules (``TenantRules.business``): negative consumption (warning), whole
  zero days (info), and off-by-default limits (period maximum, estimated share), negative register
  readings.

Registries (:mod:`messaging.validation.registry`): ``SchemaRegistry`` holds the schemas of one
spec version keyed by ``(interface id, schema version, event code)`` and compiles each with
jsonschema-rs on first use. ``busbar-builtin`` (:mod:`messaging.validation.schemas`) is Busbar's own;
``manage.py import_dip_spec <folder> [--name 2.1.0] [--make-default]`` loads the official
specification into the global tables ``messaging_specversion`` / ``messaging_specschema`` (as the
owner role; the runtime role only reads them). Importing changes no live validation: unpinned
tenants use the version marked default, else ``busbar-builtin``. ``set_tenant_validation(...)`` pins a tenant to a spec version and sets its
rules; ``compare_spec_versions(...)`` (:mod:`messaging.validation.compare`) and
``manage.py compare_spec_versions --candidate 2.1.0 [--base NAME] (FILES... | --tenant-id UUID)``
validate the same messages (given payloads, or a tenant's stored ones) under two versions and
report what would newly fail. Selectors: ``get_registry(tenant_id=..., spec_version=...)``,
``get_registry_by_name(name)``, ``get_tenant_rules(tenant_id=...)``, ``list_spec_versions()``.
Services: ``import_spec(directory=..., name=..., replace=...)``, ``set_tenant_validation(...)``.

Not checked here on purpose: key case. The DIP accepts any key case on ingress but pushes in the
specification's case, so Busbar validates keys as they are; outbound payloads are built by Busbar.
"""

from __future__ import annotations

from messaging.validation.engine import ALL_STAGES, validate_batch, validate_message
from messaging.validation.registry import SchemaRegistry
from messaging.validation.types import (
    BusinessKey,
    Finding,
    KeyHistory,
    KeyRecord,
    RuleSetting,
    Severity,
    Stage,
    TenantRules,
    ValidationContext,
    ValidationOutcome,
)

__all__ = [
    "ALL_STAGES",
    "BusinessKey",
    "Finding",
    "KeyHistory",
    "KeyRecord",
    "RuleSetting",
    "SchemaRegistry",
    "Severity",
    "Stage",
    "TenantRules",
    "ValidationContext",
    "ValidationOutcome",
    "validate_batch",
    "validate_message",
]
