"""The validation vocabulary: findings, outcomes, the context a message is validated in, and rules."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class Stage(StrEnum):
    SYNTACTIC = "syntactic"
    CONTEXTUAL = "contextual"
    BUSINESS = "business"


class Severity(StrEnum):
    """``fatal`` stops the message at its stage (later stages do not run); ``error`` makes the
    message invalid but later stages still run, so every problem is reported at once; ``warning``
    and ``info`` never stop a message."""

    FATAL = "fatal"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


STOPPING = frozenset({Severity.FATAL, Severity.ERROR})


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing validation found. ``path`` is a JSON path (``$.CommonBlock.M0.MPANCore``);
    ``rule`` names the rule and its version (``CTX-MPAN-CHECK@1``, ``SCHEMA@2.1.0``)."""

    stage: Stage
    severity: Severity
    code: str
    path: str
    text: str
    rule: str

    def as_dict(self) -> dict[str, str]:
        return {
            "stage": str(self.stage),
            "severity": str(self.severity),
            "code": self.code,
            "path": self.path,
            "text": self.text,
            "rule": self.rule,
        }


@dataclass(frozen=True, slots=True)
class BusinessKey:
    """What a message is about (``key``) and how new it is (``version``, comparable as text).

    The version is the sender's timestamp normalised to UTC (``2026-03-29T10:00:00Z``), so a
    correction sent later sorts after the message it corrects.
    """

    key: str
    version: str


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """The newest message already held for a business key: its version and sender reference."""

    version: str
    sender_reference: str


class KeyHistory(Protocol):
    """Business-key history, implemented by the inbound pipeline against the message store.

    Called once per batch with every key in it; returns, for each key already held, the newest
    held message's :class:`KeyRecord` (keys never seen are simply absent).
    """

    def __call__(self, keys: Sequence[str], /) -> Mapping[str, KeyRecord]: ...


@dataclass(frozen=True)
class RuleSetting:
    """One tenant rule: on or off, the severity it reports at, and its parameters."""

    enabled: bool = True
    severity: Severity = Severity.WARNING
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TenantRules:
    """A tenant's validation settings (from ``TenantValidationSettings``; defaults otherwise).

    ``mpan_check``: severity of a failed MPAN check digit, or None to skip the check.
    ``late_after_days``: IF-021 settlement days older than this are reported as late (info).
    ``business``: rule id -> setting, for the business stage's rules.
    """

    mpan_check: Severity | None = Severity.WARNING
    late_after_days: int = 14
    business: Mapping[str, RuleSetting] = field(default_factory=dict)

    def rule(self, rule_id: str, default: RuleSetting) -> RuleSetting:
        return self.business.get(rule_id, default)


@dataclass(frozen=True)
class ValidationContext:
    """Where a message is validated: the connection that received (or sends) it.

    ``dip_ids``: the connection's own DIP IDs (a recipient must be one of them inbound, the sender
    one of them outbound). ``role``: the connection's DIP role (``SUP``, ``SDS``...).
    ``environment``: its environment tag (``UIT``, ``PRD``...). ``direction``: ``in`` or ``out``.
    ``dcp_id``: Busbar's DIP Connection Provider ID on this connection, if it acts as one
    (outbound, S1.DIPConnectionProviderID must be it). ``channel``: the interface of the channel
    the message came on, when known. ``history``: the
    business-key history (None skips the duplicate and ordering checks). ``now``: the clock, for
    tests.
    """

    dip_ids: frozenset[str]
    role: str
    environment: str
    direction: str = "in"
    dcp_id: str | None = None
    channel: str | None = None
    history: KeyHistory | None = None
    rules: TenantRules = field(default_factory=TenantRules)
    now: dt.datetime | None = None


@dataclass(frozen=True)
class ValidationOutcome:
    """The result of validating one message.

    ``ok`` is False when any finding is fatal or an error. ``interface``, ``schema_version`` and
    ``event_code`` are what the message's S0 says (None when it could not be read).
    ``spec_version`` names the registry used; ``business_keys`` what the message is about;
    ``payload`` the parsed payload (None when the bytes were not JSON), so callers need not parse
    twice. ``stopped_at`` is the stage a fatal finding stopped at, if any.
    """

    findings: tuple[Finding, ...]
    ok: bool
    interface: str | None
    schema_version: str | None
    event_code: str | None
    spec_version: str
    business_keys: tuple[BusinessKey, ...] = ()
    payload: dict[str, Any] | None = None
    stopped_at: Stage | None = None

    @property
    def business_key(self) -> str:
        """The first business key ('' when none): the one a single store column holds."""
        return self.business_keys[0].key if self.business_keys else ""

    def worst(self) -> Severity | None:
        order = [Severity.FATAL, Severity.ERROR, Severity.WARNING, Severity.INFO]
        present = {f.severity for f in self.findings}
        return next((s for s in order if s in present), None)
