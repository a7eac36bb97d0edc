"""The DIP's response codes and HTTP statuses, and what Busbar does about each (DIP.md section 6).

Two questions are answered here and nowhere else:

- after ``POST /dip-channel/{id}``, what happens to each message of the batch (:func:`message_action`);
- after any call, is the failure worth retrying (:func:`classify_status`).

The DIP validates a batch all or nothing: one bad message gets the whole batch a 400 listing the
failing messages. The others were fine, so they are resent without the bad ones
(:attr:`Action.RESEND`), while the bad ones go to an owner as exceptions (:attr:`Action.REJECT`).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    """What the sender does next with one message (or one request)."""

    ACCEPTED = "accepted"  # the DIP took it: keep the transaction id
    REJECT = "reject"  # the message itself is wrong: raise an exception, never resend it unchanged
    RESEND = "resend"  # it was fine but its batch was refused: resend without the bad ones, now
    RETRY = "retry"  # transient: resend later with back-off, honouring Retry-After
    RECONCILE = "reconcile"  # the outcome is unknown: find out what the DIP holds before resending
    HALT = "halt"  # the request cannot succeed as configured (credentials, URL, size): stop, alert


@dataclass(frozen=True)
class Code:
    """One DIP code: its meaning (as the spec words it) and Busbar's action and advice."""

    code: str
    meaning: str
    action: Action
    advice: str


def _codes(*rows: tuple[str, str, Action, str]) -> dict[str, Code]:
    return {row[0]: Code(*row) for row in rows}


_BAD = Action.REJECT
_CONFIG = "the connection's identity is misconfigured: fix it, then resend the rejected messages"

# Synchronous codes in the StandardResponse of POST /dip-channel/{id} (ResponseCodes, DI-999).
MSG_CODES: dict[str, Code] = _codes(
    ("MSG0000", "Success", Action.ACCEPTED, "store the transaction id"),
    (
        "MSG1000",
        "Message Processing Failed",
        Action.RETRY,
        "a failure inside the DIP, not a verdict on the message: retry with back-off",
    ),
    ("MSG1001", "Schema Failure", _BAD, "the payload fails the interface's schema"),
    ("MSG1002", "Interface ID Invalid", _BAD, "S0.interfaceID does not match the channel"),
    (
        "MSG1006",
        "Sender Unique Reference Duplicated",
        Action.RECONCILE,
        "the reference was used before: if an earlier attempt of this message had no answer it "
        "was probably accepted then; look it up (replay) rather than resend",
    ),
    (
        "MSG1007",
        "Sender Timestamp Invalid",
        _BAD,
        "senderTimestamp is malformed or in the future: check the worker's clock",
    ),
    ("MSG1009", "Sender DIP ID Invalid", _BAD, _CONFIG),
    ("MSG1010", "Sender Role Invalid", _BAD, _CONFIG),
    ("MSG1011", "Connection Provider ID Invalid", _BAD, _CONFIG),
    ("MSG1012", "Sender Correlation ID Invalid", _BAD, "senderCorrelationID is malformed"),
    ("MSG1030", "Msg Addressing / Routing Error", _BAD, "the DIP cannot route the message"),
    (
        "MSG1031",
        "Primary Recipient(s) DIP Participant ID Invalid",
        _BAD,
        "a primary recipient is not a DIP participant",
    ),
    (
        "MSG1032",
        "Primary Recipient(s) DIP Role ID Invalid",
        _BAD,
        "a primary recipient has the wrong role for this interface",
    ),
    ("MSG1033", "Secondary Recipient(s) DIP Participant ID Invalid", _BAD, "routing data"),
    ("MSG1034", "Secondary Recipient(s) DIP Role ID Invalid", _BAD, "routing data"),
    ("MSG1035", "Always Recipient(s) DIP Participant ID Invalid", _BAD, "routing data"),
    ("MSG1036", "Always Recipient(s) DIP Role ID Invalid", _BAD, "routing data"),
    (
        "MSG1037",
        "Cannot Resolve Secondary Recipient(s) for Missing MPAN",
        _BAD,
        "the message needs an M0 MPAN for the DIP to route it",
    ),
    (
        "MSG1038",
        "Cannot Resolve Secondary Recipient(s) for MPAN/Party/Event Combination",
        _BAD,
        "the DIP does not know who is appointed to the MPAN: check the MPAN, or resend "
        "once registration has caught up",
    ),
)

_RCP_BAD = "the recipient refused the message technically: raise an exception for its owner"

# Recipient technical codes, carried by status messages in both directions (/statusmessage).
RCP_CODES: dict[str, Code] = _codes(
    ("RCP0000", "Message Success", Action.ACCEPTED, "the recipient took the message"),
    (
        "RCP1000",
        "Message Processing Failed",
        Action.RETRY,
        "the recipient failed to process it: a resend may succeed",
    ),
    ("RCP1001", "Schema Failure", _BAD, _RCP_BAD),
    ("RCP1002", "Interface ID Invalid", _BAD, _RCP_BAD),
    ("RCP1003", "Event Code Invalid, Unexpected or Missing", _BAD, _RCP_BAD),
    ("RCP1004", "Environment Code Invalid, Unexpected or Missing", _BAD, _RCP_BAD),
    ("RCP1005", "Schema Version Invalid or Not Compatible", _BAD, _RCP_BAD),
    ("RCP1006", "Sender Unique Reference Missing or Duplicated", _BAD, _RCP_BAD),
    ("RCP1007", "Sender Sent Date/Time Invalid or Missing", _BAD, _RCP_BAD),
    ("RCP1008", "Sender Sent Date/Time is in the Future", _BAD, "check the worker's clock"),
    ("RCP1009", "Sender DIP ID Invalid, Unexpected or Missing", _BAD, _RCP_BAD),
    ("RCP1010", "Sender Role Invalid, Unexpected or Missing", _BAD, _RCP_BAD),
    ("RCP1021", "Msg Mandatory Data Item Missing", _BAD, _RCP_BAD),
    ("RCP1022", "Msg Contains Invalid Value for Value Restricted Field", _BAD, _RCP_BAD),
    ("RCP1023", "Msg Contains Invalid Valid Value Combination(s)", _BAD, _RCP_BAD),
    ("RCP1041", "Recipient ID Invalid, Unexpected or Missing", _BAD, _RCP_BAD),
    ("RCP1042", "Publication ID Invalid, Unexpected or Missing", _BAD, _RCP_BAD),
    ("RCP1043", "DIP Txn ID Invalid, Unexpected or Missing", _BAD, _RCP_BAD),
    ("RCP1044", "DIP Txn Timestamp Invalid or Missing", _BAD, _RCP_BAD),
    ("RCP1045", "DIP Txn Timestamp is in the Future", _BAD, _RCP_BAD),
    ("RCP1046", "DIP Correlation ID Invalid, Unexpected or Missing", _BAD, _RCP_BAD),
    ("RCP1047", "Replay Indicator Invalid or Unexpected", _BAD, _RCP_BAD),
    ("RCP1051", "R0 Response Code Invalid", _BAD, _RCP_BAD),
    ("RCP1052", "R0 Response Code Inconsistent with Error Condition(s)", _BAD, _RCP_BAD),
    ("RCP1061", "MPAN Invalid or Unknown", _BAD, "the recipient does not know the MPAN"),
    ("RCP1062", "PUB Unexpected given MPAN Process Status/Condition", _BAD, _RCP_BAD),
    ("RCP1063", "Message Data Content Differs from that Issued or Expected", _BAD, _RCP_BAD),
    ("RCP1064", "MDR provided not valid", _BAD, _RCP_BAD),
    (
        "RCP9999",
        "Message Signature Invalid",
        Action.HALT,
        "the recipient could not verify the signature: check the signing certificate before "
        "sending more",
    ),
)

ALL_CODES: dict[str, Code] = {**MSG_CODES, **RCP_CODES}

_CODE_RE = re.compile(r"^\s*((?:MSG|RCP)\d{4})\b")


def parse_code(message: object) -> str | None:
    """Return the code at the start of a ``StandardResponse.message`` (``"MSG1001 - Schema
    Failure"``, also ``"MSG1001 -Schema Failure"`` as in the spec's own example), else None."""
    if not isinstance(message, str):
        return None
    match = _CODE_RE.match(message)
    return match.group(1) if match else None


def describe(code: str) -> Code | None:
    """The :class:`Code` for a MSG or RCP code, or None if Busbar does not know it."""
    return ALL_CODES.get(code)


def message_action(code: str | None) -> Action:
    """What to do with a message the DIP listed with ``code`` in a 400 answer.

    An unknown or missing code is a rejection: resending what the DIP refused for a reason Busbar
    cannot read would loop, while a rejection reaches a person.
    """
    known = MSG_CODES.get(code or "")
    return known.action if known is not None else Action.REJECT


# HTTP statuses (SubmitEvents v2.1.0 and its DIN-974 retry annotations).
ACCEPTED_STATUSES = frozenset({200, 201, 204})
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
CREDENTIAL_STATUSES = frozenset({401, 403})
PERMANENT_STATUSES = frozenset({404, 405, 406, 413, 505})


@dataclass(frozen=True)
class StatusClass:
    """The meaning of an HTTP status for the sender."""

    action: Action
    retryable: bool
    reason: str


def classify_status(status: int) -> StatusClass:
    """Classify the HTTP status of a DIP answer.

    2xx accepted; 400 per message (read the StandardResponse); 401/403 the credentials (API key,
    certificates) are refused, permanently until someone fixes them; 404/405/406/413/505 the
    request cannot succeed as sent; 408/429/5xx retry later. Any other status is treated as
    permanent: an unexplained answer should reach a person, not a retry loop.
    """
    if status in ACCEPTED_STATUSES or 200 <= status < 300:
        return StatusClass(Action.ACCEPTED, False, "accepted")
    if status == 400:
        return StatusClass(Action.REJECT, False, "the DIP refused the batch: see each message")
    if status in CREDENTIAL_STATUSES:
        return StatusClass(Action.HALT, False, "credentials refused (API key or certificates)")
    if status == 413:
        return StatusClass(Action.HALT, False, "payload too large: send smaller batches")
    if status in PERMANENT_STATUSES:
        return StatusClass(Action.HALT, False, f"HTTP {status}: the request cannot succeed as sent")
    if status in RETRY_STATUSES or (500 <= status < 600):
        return StatusClass(Action.RETRY, True, f"HTTP {status}: transient, retry later")
    return StatusClass(Action.HALT, False, f"unexpected HTTP {status}")


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), else None."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - now).total_seconds())
