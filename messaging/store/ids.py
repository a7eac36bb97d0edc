"""Time-ordered message ids and the monthly partition bounds they imply.

Every message-store row gets its id from the SQL function ``busbar_next_id()``: the milliseconds
since ``ID_EPOCH`` shifted left by ``SEQUENCE_BITS``, with the low bits from a sequence. Ids therefore
sort by creation time, so the tables can be partitioned by *id* range one month at a time: the primary
key ``(tenant_id, id)`` contains the partition key, foreign keys between store tables stay composite
with the tenant, and retention drops whole partitions.
"""

from __future__ import annotations

from datetime import UTC, datetime

ID_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
ID_EPOCH_MS = int(ID_EPOCH.timestamp() * 1000)
SEQUENCE_BITS = 20


def id_floor(moment: datetime) -> int:
    """The smallest id ``busbar_next_id()`` can give at ``moment`` (an aware datetime)."""
    if moment.tzinfo is None:
        raise ValueError("id_floor needs an aware datetime")
    milliseconds = int(moment.timestamp() * 1000) - ID_EPOCH_MS
    return max(milliseconds, 0) << SEQUENCE_BITS


def id_time(message_id: int) -> datetime:
    """When the id was made (to the millisecond)."""
    milliseconds = (message_id >> SEQUENCE_BITS) + ID_EPOCH_MS
    return datetime.fromtimestamp(milliseconds / 1000, tz=UTC)


def month_start(moment: datetime, *, offset: int = 0) -> datetime:
    """The first instant (UTC) of the month ``offset`` months after ``moment``'s."""
    index = moment.astimezone(UTC).year * 12 + moment.astimezone(UTC).month - 1 + offset
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)
