"""Settings of one dipsim instance. Everything DIP.md marks as unpublished is a setting here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Secondary recipients resolved from the MPAN registry, by interface, as roles appointed to the
# MPAN (DIP.md section 11, sender -> receivers). The sender itself is never a recipient.
DEFAULT_SECONDARY_ROLES: dict[str, list[str]] = {
    "IF-001": ["LDSO"],
    "IF-021": ["SUP", "LDSO"],
    "IF-036": ["SUP", "LDSO"],
    "IF-041": ["SUP"],
}

# Roles that may receive each interface (DIP.md section 11, sender -> receivers; the catalogue is a
# secondary source, so this is a setting). A primary or always recipient registered in another
# role is refused (MSG1032, MSG1036). Interfaces not listed accept any role. "DS" and "MS" stand
# for the data-service and metering-service families.
ROLE_FAMILIES: dict[str, tuple[str, ...]] = {
    "DS": ("SDS", "ADS", "UMSDS"),
    "MS": ("MSS", "MSA", "UMSO"),
}


def _roles(*names: str) -> list[str]:
    return sorted({role for name in names for role in ROLE_FAMILIES.get(name, (name,))})


DEFAULT_RECIPIENT_ROLES: dict[str, list[str]] = {
    "IF-001": _roles("SUP", "MDS", "LDSO"),
    "IF-021": _roles("MDS", "LSS", "LDSO", "SUP"),
    "IF-031": _roles("REGS"),
    "IF-032": _roles("SUP"),
    "IF-033": _roles("DS", "MS"),
    "IF-034": _roles("REGS"),
    "IF-035": _roles("SUP", "MS", "DS"),
    "IF-036": _roles("SUP", "DS", "MS", "LDSO", "MDS", "EES"),
    "IF-041": _roles("DS", "SUP", "LDSO"),
}


def role_matches(registered: str, appointed: str) -> bool:
    """True when a participant registered as ``registered`` may stand in the ``appointed`` role
    (itself, or a member of the family ``appointed`` names)."""
    return registered == appointed or registered in ROLE_FAMILIES.get(appointed, ())


@dataclass
class Settings:
    """Run-time configuration of ``serve`` (CLI flags map one to one onto these fields)."""

    data_dir: Path
    ca_dir: Path
    host: str = "127.0.0.1"
    port: int = 8443
    admin_host: str = "127.0.0.1"
    admin_port: int | None = 8444
    env: str = "UIT"
    dip_id: str = "0000000000"
    spec_dir: Path | None = None
    skew_seconds: float = 300.0
    # A sender's clock may run this far ahead before its senderTimestamp counts as "in the future".
    future_tolerance_seconds: float = 5.0
    max_body_bytes: int = 20 * 1024 * 1024
    max_batch_messages: int = 5000
    rate_limit_per_key: float = 0.0
    # Retry-After on an injected 429 or 503 that does not say (the DIP's value is unpublished).
    retry_after_seconds: float = 5.0
    strict_mpan_routing: bool = False
    check_mpan_digit: bool = False
    # Delivery.
    push_batch_max: int = 100
    push_concurrency: int = 16
    # Batches in flight at once per (recipient, channel). 1 keeps each channel in order.
    push_parallel_per_target: int = 1
    push_timeout_seconds: float = 15.0
    retry_base_seconds: float = 2.0
    retry_factor: float = 2.0
    retry_max_delay_seconds: float = 600.0
    max_attempts: int = 12
    retention_hours: float = 72.0
    allow_http_webhooks: bool = False
    webhook_ca_files: list[Path] = field(default_factory=list)
    replay_limit: int = 1000
    public_base_url: str | None = None
    secondary_roles: dict[str, list[str]] = field(
        default_factory=lambda: dict(DEFAULT_SECONDARY_ROLES)
    )
    recipient_roles: dict[str, list[str]] = field(
        default_factory=lambda: dict(DEFAULT_RECIPIENT_ROLES)
    )
