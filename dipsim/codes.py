"""DIP response codes that dipsim produces (DIP.md section 6.2).

The wire form of a code in ``StandardResponse.message`` is ``"<CODE> - <text>"``, as in the
specification's examples (``"MSG0000 - Success"``).
"""

from __future__ import annotations

MSG_TEXT: dict[str, str] = {
    "MSG0000": "Success",
    "MSG1000": "Message Processing Failed",
    "MSG1001": "Schema Failure",
    "MSG1002": "Interface ID Invalid",
    "MSG1006": "Sender Unique Reference Duplicated",
    "MSG1007": "Sender Timestamp Invalid",
    "MSG1009": "Sender DIP ID Invalid",
    "MSG1010": "Sender Role Invalid",
    "MSG1011": "Connection Provider ID Invalid",
    "MSG1012": "Sender Correlation ID Invalid",
    "MSG1030": "Msg Addressing / Routing Error",
    "MSG1031": "Primary Recipient(s) DIP Participant ID Invalid",
    "MSG1032": "Primary Recipient(s) DIP Role ID Invalid",
    "MSG1033": "Secondary Recipient(s) DIP Participant ID Invalid",
    "MSG1034": "Secondary Recipient(s) DIP Role ID Invalid",
    "MSG1035": "Always Recipient(s) DIP Participant ID Invalid",
    "MSG1036": "Always Recipient(s) DIP Role ID Invalid",
    "MSG1037": "Cannot Resolve Secondary Recipient(s) for Missing MPAN",
    "MSG1038": "Cannot Resolve Secondary Recipient(s) for MPAN/Party/Event Combination",
}

RCP_TEXT: dict[str, str] = {
    "RCP0000": "Message Success",
    "RCP1000": "Message Processing Failed",
    "RCP1001": "Schema Failure",
    "RCP1061": "MPAN Invalid or Unknown",
    "RCP9999": "Message Signature Invalid",
}

# Webhook answers the DIP retries, and the ones it gives up on at once (spec, DIN-974).
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
NO_RETRY_STATUSES = frozenset({400, 401, 403, 404, 405, 406, 413, 505})


def message(code: str) -> str:
    """Return the ``message`` field for ``code``, e.g. ``"MSG1001 - Schema Failure"``."""
    text = MSG_TEXT.get(code) or RCP_TEXT.get(code) or "Unknown"
    return f"{code} - {text}"


def should_retry(status: int) -> bool:
    """True when a webhook answer with ``status`` should be retried.

    408, 429 and every 5xx except 505 are retried; every other non-2xx answer is final.
    """
    return status in RETRY_STATUSES or (500 <= status < 600 and status != 505)
