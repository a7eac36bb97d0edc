"""The DIP message envelope (DIP.md section 2): the CommonBlock Busbar writes on outbound messages,
the sender unique reference, DT-003 timestamps, MPAN check digits and status-message entries.

The sender fills S0, S1, A0.primaryRecipients and M0; the DIP fills D0 and the rest of A0, so those
are never written here. Every builder checks its inputs against the v2.1.0 formats and raises
:class:`EnvelopeError` naming the field, so a malformed envelope never reaches the DIP.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterable
from typing import Any

ENVIRONMENTS = ("PRD", "SITB", "SIT", "UIT", "DEV")
GSP_GROUPS = ("_A", "_B", "_C", "_D", "_E", "_F", "_G", "_H", "_J", "_K", "_L", "_M", "_N", "_P")

# S0.schemaVersion in v2.1.0: "011" for interfaces, with the exceptions below.
DEFAULT_SCHEMA_VERSION = "011"
SCHEMA_VERSIONS = {"IF-051": "001"}
REPORT_SCHEMA_VERSION = "008"

SENDER_REFERENCE_RE = re.compile(
    r"^S-((IF|REP)-)?\d{3,4}-[0-9a-fA-F]{10}-[A-Z]{3,5}-\d{8}-[a-zA-Z0-9]+$"
)
SENDER_REFERENCE_MAX = 200
INTERFACE_RE = re.compile(r"^(IF|REP)-(\d{3})([A-Z]?)$")
# DT-006 is "10 characters"; the sender reference pattern narrows the sender's to hex digits.
DIP_ID_RE = re.compile(r"^[0-9a-fA-F]{10}$")
ROLE_RE = re.compile(r"^[A-Z]{3,5}$")
EVENT_CODE_RE = re.compile(r"^\[[^\[\]]{1,48}\]$")
UNIQUE_PART_RE = re.compile(r"^[a-zA-Z0-9]+$")
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")
MPAN_WEIGHTS = (3, 5, 7, 13, 17, 19, 23, 29, 31, 37, 41, 43)


class EnvelopeError(ValueError):
    """An envelope field is missing or malformed; the message names the field."""


def _utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        raise EnvelopeError("timestamps must be timezone-aware")
    return moment.astimezone(dt.UTC)


def dip_timestamp(moment: dt.datetime | None = None) -> str:
    """Return ``moment`` (default now) as DT-003 in UTC: ``YYYY-MM-DDThh:mm:ss+00:00``.

    Exactly 25 characters: no fractional seconds and no ``Z`` (the schema's length rule).
    """
    # isoformat of the naive UTC time, not strftime: 1.7 against 4.3 us,
    # paid twice for every push the webhook answers; and always four digits of year.
    utc = _utc(moment or dt.datetime.now(dt.UTC))
    return utc.replace(microsecond=0, tzinfo=None).isoformat() + "+00:00"


def parse_dip_timestamp(value: str) -> dt.datetime:
    """Parse a DT-003 timestamp (exactly 25 characters, explicit offset); raise EnvelopeError."""
    if not isinstance(value, str) or len(value) != 25 or not TIMESTAMP_RE.match(value):
        raise EnvelopeError(f"{value!r} is not a 25-character YYYY-MM-DDThh:mm:ss+hh:mm timestamp")
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError as err:
        raise EnvelopeError(f"{value!r} is not a valid date and time") from err


def schema_version_for(interface_id: str) -> str:
    """S0.schemaVersion for an interface or report in v2.1.0 (DIP.md section 2.2)."""
    interface_id = check_interface_id(interface_id)
    if interface_id.startswith("REP-"):
        return REPORT_SCHEMA_VERSION
    return SCHEMA_VERSIONS.get(interface_id, DEFAULT_SCHEMA_VERSION)


def check_interface_id(interface_id: str) -> str:
    """Return ``interface_id`` upper-cased (``IF-021``, ``REP-002A``) or raise EnvelopeError."""
    value = interface_id.upper() if isinstance(interface_id, str) else ""
    if not INTERFACE_RE.match(value):
        raise EnvelopeError(f"interface id {interface_id!r} is not IF-nnn or REP-nnn[A-Z]")
    return value


def event_code(name: str) -> str:
    """Return the wire form of an event code, with brackets: ``ActivePower`` -> ``[ActivePower]``."""
    code = name if name.startswith("[") else f"[{name}]"
    if not EVENT_CODE_RE.match(code):
        raise EnvelopeError(f"event code {name!r} is not 1-48 characters inside brackets")
    return code


def _check_dip_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not DIP_ID_RE.match(value):
        raise EnvelopeError(f"{field} {value!r} is not a 10-character (hex digit) DIP ID")
    return value


def _check_role(value: Any, field: str) -> str:
    if not isinstance(value, str) or not ROLE_RE.match(value):
        raise EnvelopeError(f"{field} {value!r} is not a 3-5 letter upper-case role code")
    return value


def new_sender_reference(
    *,
    interface_id: str,
    sender_dip_id: str,
    sender_role: str,
    day: dt.date | None = None,
    unique: str | None = None,
) -> str:
    """Return a sender unique reference ``S-<IF>-<DIP ID>-<role>-<yyyymmdd>-<unique>``.

    ``unique`` (letters and digits) should be the outbound message's own stable id so that a
    resend of the same message carries the same reference: if an earlier attempt did reach the
    DIP, the DIP answers MSG1006 instead of accepting the message twice. Without it a random
    128-bit value is used. A report letter suffix (``REP-002A``) is dropped, because the spec's
    pattern allows only digits there (an inference: the spec gives no example for it).
    """
    match = INTERFACE_RE.match(check_interface_id(interface_id))
    assert match is not None
    day = day or dt.datetime.now(dt.UTC).date()
    unique = unique if unique is not None else uuid.uuid4().hex
    if not UNIQUE_PART_RE.match(unique):
        raise EnvelopeError(f"the unique part {unique!r} must be letters and digits only")
    reference = (
        f"S-{match.group(1)}-{match.group(2)}-{_check_dip_id(sender_dip_id, 'senderDIPID')}"
        f"-{_check_role(sender_role, 'senderRoleID')}-{day:%Y%m%d}-{unique}"
    )
    check_sender_reference(reference)
    return reference


def check_sender_reference(reference: Any) -> str:
    """Return ``reference`` if it meets DT-995 (pattern, 1-200 characters) or raise EnvelopeError."""
    if (
        not isinstance(reference, str)
        or len(reference) > SENDER_REFERENCE_MAX
        or not SENDER_REFERENCE_RE.match(reference)
    ):
        raise EnvelopeError(f"senderUniqueReference {reference!r} does not match the DIP pattern")
    return reference


def mpan_check_digit(first12: str) -> int:
    """The check digit of an MPAN core's first twelve digits: sum(d_i * P_i) mod 11 mod 10."""
    if len(first12) != 12 or not first12.isdigit():
        raise EnvelopeError(f"{first12!r} is not twelve digits")
    return sum(int(d) * w for d, w in zip(first12, MPAN_WEIGHTS, strict=True)) % 11 % 10


def mpan_check_digit_ok(mpan_core: str) -> bool:
    """True when a 13-digit MPAN core's last digit is its check digit."""
    if not isinstance(mpan_core, str) or len(mpan_core) != 13 or not mpan_core.isdigit():
        return False
    return mpan_check_digit(mpan_core[:12]) == int(mpan_core[12])


def mpan_block(
    *, mpan_core: str, distributor_dip_id: str, gsp_group_id: str, check_digit: bool = True
) -> dict[str, str]:
    """Return an M0 block. ``check_digit`` refuses an MPAN whose check digit is wrong: the DIP's
    schema does not enforce it, so a bad one would only be rejected later by its recipients."""
    if not isinstance(mpan_core, str) or len(mpan_core) != 13 or not mpan_core.isdigit():
        raise EnvelopeError(f"MPANCore {mpan_core!r} is not 13 digits")
    if check_digit and not mpan_check_digit_ok(mpan_core):
        raise EnvelopeError(f"MPANCore {mpan_core} fails its check digit")
    if gsp_group_id not in GSP_GROUPS:
        raise EnvelopeError(f"GSPGroupID {gsp_group_id!r} is not one of {', '.join(GSP_GROUPS)}")
    return {
        "MPANCore": mpan_core,
        "distributorDIPID": _check_dip_id(distributor_dip_id, "distributorDIPID"),
        "GSPGroupID": gsp_group_id,
    }


def build_common_block(
    *,
    interface_id: str,
    event: str,
    environment: str,
    sender_dip_id: str,
    sender_role: str,
    primary_recipients: Iterable[str] = (),
    sender_reference: str | None = None,
    sent_at: dt.datetime | None = None,
    correlation_id: str | None = None,
    connection_provider_id: str | None = None,
    sub_text: str | None = None,
    m0: dict[str, str] | None = None,
    schema_version: str | None = None,
) -> dict[str, Any]:
    """Return an outbound CommonBlock: S0, S1 (all eight keys), A0 and, if given, M0.

    ``event`` is the event code with or without brackets. ``sender_reference`` defaults to a
    new one (:func:`new_sender_reference`); ``sent_at`` to now. ``connection_provider_id`` is
    Busbar's own DIP ID when it sends as a DCP on a tenant's behalf. A0 carries the primary
    recipients only; secondary and always recipients are the DIP's to fill.
    Raises :class:`EnvelopeError` naming the first malformed field.
    """
    interface_id = check_interface_id(interface_id)
    if environment not in ENVIRONMENTS:
        raise EnvelopeError(
            f"environmentTag {environment!r} is not one of {', '.join(ENVIRONMENTS)}"
        )
    _check_dip_id(sender_dip_id, "senderDIPID")
    _check_role(sender_role, "senderRoleID")
    moment = _utc(sent_at or dt.datetime.now(dt.UTC))
    reference = check_sender_reference(
        sender_reference
        or new_sender_reference(
            interface_id=interface_id,
            sender_dip_id=sender_dip_id,
            sender_role=sender_role,
            day=moment.date(),
        )
    )
    if correlation_id is not None and not (
        isinstance(correlation_id, str) and 1 <= len(correlation_id) <= 60
    ):
        raise EnvelopeError("senderCorrelationID must be 1-60 characters or null")
    if connection_provider_id is not None:
        _check_dip_id(connection_provider_id, "DIPConnectionProviderID")
    if sub_text is not None and len(sub_text) > 500:
        raise EnvelopeError("subText must be at most 500 characters")
    recipients = [_check_dip_id(r, "primaryRecipients") for r in primary_recipients]
    block: dict[str, Any] = {
        "S0": {
            "interfaceID": interface_id,
            "schemaVersion": schema_version or schema_version_for(interface_id),
            "eventCode": event_code(event),
        },
        "S1": {
            "environmentTag": environment,
            "subText": sub_text,
            "senderUniqueReference": reference,
            "senderTimestamp": dip_timestamp(moment),
            "senderDIPID": sender_dip_id,
            "senderRoleID": sender_role,
            "senderCorrelationID": correlation_id,
            "DIPConnectionProviderID": connection_provider_id,
        },
        "A0": {"primaryRecipients": recipients, "secondaryRecipients": [], "always": []},
    }
    if m0 is not None:
        block["M0"] = m0
    return block


def build_payload(
    common_block: dict[str, Any], custom_block: dict[str, Any] | None
) -> dict[str, Any]:
    """Return a message ``payload``: the CommonBlock and, when the interface has one, CustomBlock."""
    payload: dict[str, Any] = {"CommonBlock": common_block}
    if custom_block is not None:
        payload["CustomBlock"] = custom_block
    return payload


def status_entry(
    *,
    code: str,
    text: str,
    sender_dip_id: str,
    transaction_id: str | None,
    recipient_dip_id: str | None = None,
    sender_reference: str | None = None,
    correlation_id: str | None = None,
    sent_at: dt.datetime | None = None,
    connection_provider_id: str | None = None,
    help_text: str | None = None,
) -> dict[str, Any]:
    """Return one StandardResponseBodyType for ``POST /statusmessage`` (all ten keys present).

    ``code`` is an RCP code and ``text`` its meaning; the wire form is ``"RCP1061 - <text>"``.
    ``sender_dip_id`` is the identity reporting (the recipient of the original message);
    ``recipient_dip_id`` the original sender, when known.
    """
    _check_dip_id(sender_dip_id, "senderID")
    if recipient_dip_id is not None:
        _check_dip_id(recipient_dip_id, "recipientID")
    return {
        "transactionID": transaction_id,
        "senderUniqueReference": sender_reference,
        "correlationID": correlation_id,
        "sentTimestamp": dip_timestamp(sent_at),
        "senderID": sender_dip_id,
        "recipientID": recipient_dip_id,
        "DIPConnectionProviderID": connection_provider_id,
        "message": f"{code} - {text}"[:200],
        "help": help_text[:500] if help_text else None,
        "serviceTicketURL": None,
    }
