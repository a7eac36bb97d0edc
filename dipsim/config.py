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
