"""A client's submission, checked, and the final DIP payload Busbar builds from it.

A client system knows the business content (the CustomBlock) and the envelope facts only it can
know: the event code, the MPAN with its distributor and GSP group, the primary recipients, its
correlation id and, if it wants ordering by something other than MPAN and interface, an explicit
business key. Busbar fills in the rest when it sends (DIP.md section 2.2): S0's interface id and
schema version from the channel, S1's environment tag, sender DIP ID and role from the connection,
a sender unique reference made from the message's own id (so a resend carries the same one and the
DIP's duplicate check, MSG1006, protects the market), the 25-character sender timestamp and, when
Busbar acts as the tenant's connection provider, its DCP id.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from messaging.dip.envelope import (
    DIP_ID_RE,
    EVENT_CODE_RE,
    GSP_GROUPS,
    EnvelopeError,
    build_common_block,
    build_payload,
    mpan_block,
    mpan_check_digit_ok,
    new_sender_reference,
)

FIELDS = frozenset(
    {
        "event_code",
        "custom_block",
        "primary_recipients",
        "correlation_id",
        "mpan",
        "distributor_dip_id",
        "gsp_group_id",
        "business_key",
        "sub_text",
        "supersede",
        "urgency",
    }
)
URGENCIES = ("normal", "urgent")
MAX_RECIPIENTS = 50
BUSINESS_KEY_RE = re.compile(r"^[\x21-\x7e]{1,120}$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a submission: where (a JSON path) and what."""

    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


@dataclass(frozen=True)
class Submission:
    """One message as a client submitted it, checked (see :func:`parse_submission`)."""

    event_code: str
    custom_block: dict[str, Any] | None
    primary_recipients: tuple[str, ...] = ()
    correlation_id: str | None = None
    mpan: str | None = None
    distributor_dip_id: str | None = None
    gsp_group_id: str | None = None
    business_key: str | None = None
    sub_text: str | None = None
    # A later version: unsent earlier messages with the same business key are superseded.
    supersede: bool = False
    # "urgent" goes before "normal" (never before an earlier message with its business key).
    urgency: str = "normal"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def as_json(self) -> dict[str, Any]:
        """The canonical form stored as the message's submission (what the worker enriches)."""
        return {
            "event_code": self.event_code,
            "custom_block": self.custom_block,
            "primary_recipients": list(self.primary_recipients),
            "correlation_id": self.correlation_id,
            "mpan": self.mpan,
            "distributor_dip_id": self.distributor_dip_id,
            "gsp_group_id": self.gsp_group_id,
            "business_key": self.business_key,
            "sub_text": self.sub_text,
            "supersede": self.supersede,
            "urgency": self.urgency,
        }

    def key_for(self, interface_id: str) -> str:
        """The ordering key: the explicit business key, else MPAN and interface, else none."""
        if self.business_key:
            return self.business_key
        if self.mpan:
            return f"{self.mpan}:{interface_id}"
        return ""


def _text(value: Any, path: str, problems: list[Problem], *, max_length: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        problems.append(Problem(path, "must be a non-empty string or null"))
        return None
    if len(value) > max_length:
        problems.append(Problem(path, f"must be at most {max_length} characters"))
        return None
    if "\x00" in value:
        problems.append(Problem(path, "must not contain NUL characters"))
        return None
    return value


def parse_submission(data: Any, path: str = "$") -> tuple[Submission | None, list[Problem]]:
    """Check one submitted message; return it with no problems, or None and every problem.

    Only the envelope facts the client owns are checked here; the CustomBlock's content is the
    schema registry's to judge. Never raises for bad input.
    """
    problems: list[Problem] = []
    if not isinstance(data, Mapping):
        return None, [Problem(path, "a message is a JSON object")]
    for name in sorted(set(data) - FIELDS):
        problems.append(Problem(f"{path}.{name}", "unknown field (Busbar fills the envelope)"))

    event = data.get("event_code")
    event_code: str | None = None
    if not isinstance(event, str) or not event:
        problems.append(Problem(f"{path}.event_code", "required: the S0 event code"))
    else:
        event_code = event if event.startswith("[") else f"[{event}]"
        if not EVENT_CODE_RE.match(event_code):
            problems.append(
                Problem(f"{path}.event_code", "must be 1-48 characters, with or without brackets")
            )

    custom = data.get("custom_block")
    if custom is not None and not isinstance(custom, Mapping):
        problems.append(Problem(f"{path}.custom_block", "must be a JSON object or null"))
    elif "custom_block" not in data:
        problems.append(
            Problem(f"{path}.custom_block", "required (null for an interface without one)")
        )

    recipients = data.get("primary_recipients", [])
    checked: list[str] = []
    if not isinstance(recipients, list):
        problems.append(Problem(f"{path}.primary_recipients", "must be an array of DIP IDs"))
    elif len(recipients) > MAX_RECIPIENTS:
        problems.append(
            Problem(f"{path}.primary_recipients", f"at most {MAX_RECIPIENTS} recipients")
        )
    else:
        for index, recipient in enumerate(recipients):
            if not isinstance(recipient, str) or not DIP_ID_RE.match(recipient):
                problems.append(
                    Problem(
                        f"{path}.primary_recipients[{index}]",
                        "must be a 10-character (hex digit) DIP ID",
                    )
                )
            else:
                checked.append(recipient)

    correlation = _text(
        data.get("correlation_id"), f"{path}.correlation_id", problems, max_length=60
    )
    sub_text = _text(data.get("sub_text"), f"{path}.sub_text", problems, max_length=500)
    business_key = data.get("business_key")
    if business_key is not None and (
        not isinstance(business_key, str) or not BUSINESS_KEY_RE.match(business_key)
    ):
        problems.append(
            Problem(f"{path}.business_key", "must be 1-120 printable characters without spaces")
        )
        business_key = None

    supersede = data.get("supersede", False)
    if not isinstance(supersede, bool):
        problems.append(Problem(f"{path}.supersede", "must be true or false"))
    elif supersede and not (business_key or data.get("mpan")):
        problems.append(
            Problem(f"{path}.supersede", "needs a business key or an MPAN to know what it replaces")
        )
    urgency = data.get("urgency", "normal")
    if urgency not in URGENCIES:
        problems.append(Problem(f"{path}.urgency", f"must be one of {', '.join(URGENCIES)}"))
    mpan = data.get("mpan")
    distributor = data.get("distributor_dip_id")
    gsp = data.get("gsp_group_id")
    m0_given = [
        name
        for name, v in (("mpan", mpan), ("distributor_dip_id", distributor), ("gsp_group_id", gsp))
        if v is not None
    ]
    if m0_given:
        if not isinstance(mpan, str) or len(mpan) != 13 or not mpan.isdigit():
            problems.append(Problem(f"{path}.mpan", "must be a 13-digit MPAN core"))
        elif not mpan_check_digit_ok(mpan):
            problems.append(Problem(f"{path}.mpan", f"MPAN core {mpan} fails its check digit"))
        if not isinstance(distributor, str) or not DIP_ID_RE.match(distributor):
            problems.append(
                Problem(
                    f"{path}.distributor_dip_id",
                    "required with an MPAN: the distributor's 10-character DIP ID",
                )
            )
        if gsp not in GSP_GROUPS:
            problems.append(
                Problem(
                    f"{path}.gsp_group_id",
                    f"required with an MPAN: one of {', '.join(GSP_GROUPS)}",
                )
            )
    if problems:
        return None, problems
    assert event_code is not None
    return (
        Submission(
            event_code=event_code,
            custom_block=dict(custom) if custom is not None else None,
            primary_recipients=tuple(checked),
            correlation_id=correlation,
            mpan=mpan,
            distributor_dip_id=distributor,
            gsp_group_id=gsp,
            business_key=business_key,
            sub_text=sub_text,
            supersede=supersede is True,
            urgency=str(urgency),
        ),
        [],
    )


def submission_from_json(data: Mapping[str, Any]) -> Submission:
    """Read back a stored canonical submission (:meth:`Submission.as_json`)."""
    submission, problems = parse_submission(dict(data))
    if submission is None:
        raise EnvelopeError("; ".join(f"{p.path}: {p.message}" for p in problems))
    return submission


@dataclass(frozen=True)
class Sender:
    """Who sends, from the connection: the tenant's identity in one environment."""

    interface_id: str
    environment: str
    dip_id: str
    role: str
    dcp_id: str | None


def unique_part(message_id: int) -> str:
    """The sender reference's last part: the message id in base 36 (letters and digits)."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    value, out = message_id, ""
    while True:
        value, rest = divmod(value, 36)
        out = digits[rest] + out
        if value == 0:
            return out


def sender_reference(*, sender: Sender, message_id: int, created_at: dt.datetime) -> str:
    """The message's sender unique reference; the same for every attempt of one message."""
    return new_sender_reference(
        interface_id=sender.interface_id,
        sender_dip_id=sender.dip_id,
        sender_role=sender.role,
        day=created_at.astimezone(dt.UTC).date(),
        unique=unique_part(message_id),
    )


def final_payload(
    *,
    submission: Submission,
    sender: Sender,
    message_id: int,
    created_at: dt.datetime,
    now: dt.datetime,
) -> tuple[bytes, str]:
    """Return the exact payload bytes to send and their sender unique reference.

    Raises :class:`EnvelopeError` naming the field when the envelope cannot be built.
    """
    reference = sender_reference(sender=sender, message_id=message_id, created_at=created_at)
    m0 = None
    if submission.mpan:
        m0 = mpan_block(
            mpan_core=submission.mpan,
            distributor_dip_id=submission.distributor_dip_id or "",
            gsp_group_id=submission.gsp_group_id or "",
        )
    common = build_common_block(
        interface_id=sender.interface_id,
        event=submission.event_code,
        environment=sender.environment,
        sender_dip_id=sender.dip_id,
        sender_role=sender.role,
        primary_recipients=submission.primary_recipients,
        sender_reference=reference,
        sent_at=now,
        correlation_id=submission.correlation_id,
        connection_provider_id=sender.dcp_id or None,
        sub_text=submission.sub_text,
        m0=m0,
    )
    payload = build_payload(common, submission.custom_block)
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return body, reference
