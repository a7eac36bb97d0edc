"""The reconciliation controls. Each compares two sides of the tenant's traffic and returns its
verdicts (one per channel, or one for the tenant); :mod:`.services` stores them as one run.

Counts come from the store's rollups (``messaging_flow_rollup``: messages that entered a state per
hour; ``messaging_state_count``: messages in a state now), never from counting messages. Where a
control needs single messages (per-MPAN chains, the DIP's own record), it reads a bounded window
through an index: the appointment interfaces' partial index, transaction ids, the time-ordered id.

Run inside the tenant's context. Windows are whole hours where rollups are read: a message earlier
in the window's first hour counts as inside it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection as db
from django.db.models import Max, Min, Sum

from messaging.dip import DipTransportError
from messaging.dip.webhook import DeliveryError, parse_push
from messaging.models import FlowRollup, Message, StateCount
from messaging.reconciliation.models import Control, ResultStatus
from messaging.store.ids import id_floor, id_time
from messaging.store.states import InboundState, OutboundState
from tenants.models import Channel, ChannelStatus, Direction

logger = logging.getLogger(__name__)

# How long each side may lag before the difference is a breach rather than work in flight.
ACK_DEADLINE = timedelta(hours=1)
PROCESS_DEADLINE = timedelta(minutes=15)
WINDOW = timedelta(hours=24)
# The DIP's record is read back this far, leaving out the last minutes (pushes still in flight).
DIP_WINDOW = timedelta(hours=6)
DIP_SETTLE = timedelta(minutes=2)
DIP_REPLAY_LIMIT = 1000  # dipsim's and, by the spec's silence, any DIP's cap: a full page is noted
REQUEUE_BATCH = 100  # MessageRequest.transactionIDs holds 1 to 100
DETAIL_LIMIT = 100

# The appointment chain (DESIGN section 5): a supplier's request (IF-031), the Registration
# Service's initial response (IF-032), its request to the service provider (IF-033), the
# provider's response (IF-034), the outcome (IF-035) and the confirmation (IF-036). Each step is
# due within its deadline from the chain's first message. A tenant sees only its part of a chain
# (a supplier never sees IF-033/IF-034): the steps expected are those it has channels for.
APPOINTMENT_STEPS: dict[str, tuple[str, timedelta]] = {
    "IF-031": ("supplier's appointment request", timedelta(0)),
    "IF-032": ("Registration Service's initial response", timedelta(hours=2)),
    "IF-033": ("request to the service provider", timedelta(hours=4)),
    "IF-034": ("service provider's response", timedelta(days=2)),
    "IF-035": ("appointment outcome", timedelta(days=3)),
    "IF-036": ("appointment confirmation", timedelta(days=5)),
}
APPOINTMENT_LOOKBACK = timedelta(days=14)
# An IF-035 with these event codes ends the chain: no confirmation follows a refusal.
CHAIN_ENDING_EVENTS = ("Rejected", "Lapsed")
CONSUMPTION_LOOKBACK = timedelta(days=8)


@dataclass
class Verdict:
    control: str
    status: str
    expected: int
    found: int
    summary: str
    window_from: datetime
    window_to: datetime
    channel: Channel | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _entered(channel: Channel, states: Sequence[str], since: datetime) -> int:
    total = FlowRollup.objects.filter(
        connection_id=channel.connection_id,
        interface_id=channel.interface_id,
        direction=channel.direction,
        state__in=list(states),
        hour__gte=floor_hour(since),
    ).aggregate(total=Sum("entered"))["total"]
    return int(total or 0)


def _in_state(channel: Channel, states: Sequence[str]) -> int:
    total = StateCount.objects.filter(
        connection_id=channel.connection_id,
        interface_id=channel.interface_id,
        direction=channel.direction,
        state__in=list(states),
    ).aggregate(total=Sum("count"))["total"]
    return int(total or 0)


def _oldest_waiting(channel: Channel, states: Sequence[str]) -> datetime | None:
    """When the oldest message of the channel in ``states`` arrived (ids are time-ordered, so the
    work index answers it without counting)."""
    oldest = Message.objects.filter(
        connection_id=channel.connection_id,
        interface_id=channel.interface_id,
        direction=channel.direction,
        state__in=list(states),
    ).aggregate(oldest=Min("id"))["oldest"]
    return id_time(int(oldest)) if oldest is not None else None


def live_channels(*, direction: str | None = None) -> list[Channel]:
    channels = Channel.objects.select_related("connection__identity").exclude(
        status=ChannelStatus.DISABLED
    )
    if direction:
        channels = channels.filter(direction=direction)
    return list(channels.order_by("connection_id", "interface_id", "direction"))


# ---- expected vs received against the channel's cadence ---------------------------------------


def check_cadence(*, now: datetime) -> list[Verdict]:
    """Each channel with an expected cadence carried at least one message within it."""
    verdicts = []
    for channel in live_channels():
        if not channel.expected_cadence:
            continue
        since = now - channel.expected_cadence
        entry = (
            InboundState.RECEIVED
            if channel.direction == Direction.INBOUND
            else OutboundState.ACCEPTED
        )
        found = _entered(channel, [entry], since)
        last_hour = FlowRollup.objects.filter(
            connection_id=channel.connection_id,
            interface_id=channel.interface_id,
            direction=channel.direction,
            state=entry,
            entered__gt=0,
        ).aggregate(last=Max("hour"))["last"]
        last = min(last_hour + timedelta(hours=1), now) if last_hour else None
        quiet = found == 0
        verdicts.append(
            Verdict(
                control=Control.CADENCE,
                channel=channel,
                status=ResultStatus.BREACH if quiet else ResultStatus.OK,
                expected=1,
                found=found,
                window_from=since,
                window_to=now,
                summary=(
                    f"quiet: nothing {'received' if channel.direction == Direction.INBOUND else 'submitted'}"
                    f" for {channel.expected_cadence} (its expected cadence)"
                    if quiet
                    else f"{found} message(s) within its cadence of {channel.expected_cadence}"
                ),
                detail={
                    "cadence_seconds": channel.expected_cadence.total_seconds(),
                    "last_traffic_before": last.isoformat() if last else None,
                },
            )
        )
    return verdicts


# ---- submitted vs acknowledged (outbound) ------------------------------------------------------


def check_acknowledged(*, now: datetime) -> list[Verdict]:
    """Outbound: what the DIP accepted (sent) is closed by an acknowledgement or a rejection."""
    verdicts = []
    since = now - WINDOW
    for channel in live_channels(direction=Direction.OUTBOUND):
        sent = _entered(channel, [OutboundState.SENT], since)
        closed = _entered(channel, [OutboundState.ACKNOWLEDGED, OutboundState.REJECTED], since)
        waiting = _in_state(channel, [OutboundState.SENT])
        oldest = _oldest_waiting(channel, [OutboundState.SENT]) if waiting else None
        overdue = oldest is not None and now - oldest > ACK_DEADLINE
        status = (
            ResultStatus.BREACH if overdue else ResultStatus.PENDING if waiting else ResultStatus.OK
        )
        verdicts.append(
            Verdict(
                control=Control.ACKNOWLEDGED,
                channel=channel,
                status=status,
                expected=sent,
                found=closed,
                window_from=since,
                window_to=now,
                summary=(
                    f"{waiting} sent message(s) unacknowledged, the oldest since"
                    f" {oldest:%Y-%m-%d %H:%M} UTC (deadline {ACK_DEADLINE})"
                    if overdue and oldest
                    else f"{waiting} awaiting acknowledgement within {ACK_DEADLINE}"
                    if waiting
                    else "every sent message acknowledged or rejected"
                ),
                detail={
                    "sent": sent,
                    "acknowledged": _entered(channel, [OutboundState.ACKNOWLEDGED], since),
                    "rejected": _entered(channel, [OutboundState.REJECTED], since),
                    "awaiting_now": waiting,
                    "oldest_awaiting": oldest.isoformat() if oldest else None,
                },
            )
        )
    return verdicts


# ---- acknowledged vs processed and delivered downstream (inbound) -------------------------------


WAITING_INBOUND = [InboundState.RECEIVED, InboundState.AWAITING, InboundState.VALID]


def check_processed(*, now: datetime) -> list[Verdict]:
    """Inbound: every message Busbar acknowledged to the DIP reached a verdict (normalised or
    invalid) and its events went downstream; nothing waits beyond the deadline or failed."""
    verdicts = []
    since = now - WINDOW
    for channel in live_channels(direction=Direction.INBOUND):
        received = _entered(channel, [InboundState.RECEIVED], since)
        normalised = _entered(channel, [InboundState.NORMALISED], since)
        invalid = _entered(channel, [InboundState.INVALID], since)
        delivered = _entered(channel, [InboundState.DELIVERED], since)
        failed = _in_state(channel, [InboundState.FAILED])
        waiting = _in_state(channel, WAITING_INBOUND)
        oldest = _oldest_waiting(channel, WAITING_INBOUND) if waiting else None
        overdue = oldest is not None and now - oldest > PROCESS_DEADLINE
        if failed or overdue:
            status = ResultStatus.BREACH
            summary = (
                f"{failed} message(s) failed"
                if failed
                else f"{waiting} message(s) unprocessed, the oldest since {oldest:%H:%M} UTC"
            )
        elif waiting:
            status, summary = ResultStatus.PENDING, f"{waiting} message(s) being processed"
        else:
            status = ResultStatus.OK
            summary = f"{received} received, {normalised} normalised, {invalid} invalid"
        verdicts.append(
            Verdict(
                control=Control.PROCESSED,
                channel=channel,
                status=status,
                expected=received,
                found=normalised + invalid,
                window_from=since,
                window_to=now,
                summary=summary,
                detail={
                    "received": received,
                    "normalised": normalised,
                    "invalid": invalid,
                    "delivered_downstream": delivered,
                    "failed_now": failed,
                    "waiting_now": waiting,
                    "oldest_waiting": oldest.isoformat() if oldest else None,
                },
            )
        )
    return verdicts


# ---- business chains ---------------------------------------------------------------------------


def check_appointment_chains(*, now: datetime) -> list[Verdict]:
    """Per MPAN, the appointment chain's steps this tenant takes part in arrive in order within
    their deadlines; an overdue chain is reported with its first missing step."""
    order = list(APPOINTMENT_STEPS)
    taken_part = {c.interface_id for c in live_channels() if c.interface_id in APPOINTMENT_STEPS}
    if not taken_part:
        return []
    since = now - APPOINTMENT_LOOKBACK
    # interface_id IN (the chain) matches the partial index message_appointment.
    rows = (
        Message.objects.filter(id__gte=id_floor(since), interface_id__in=order)
        .exclude(mpan="")
        .values_list("mpan", "interface_id", "event_code", "id")
        .order_by("id")
    )
    chains: dict[str, dict[str, tuple[datetime, str]]] = defaultdict(dict)
    for mpan, interface_id, event_code, message_id in rows.iterator(chunk_size=2000):
        chains[mpan].setdefault(interface_id, (id_time(message_id), event_code))
    incomplete: list[dict[str, Any]] = []
    complete = pending = 0
    for mpan, seen in sorted(chains.items()):
        started_at = min(at for at, _ in seen.values())
        first = min(order.index(step) for step in seen)
        outcome = seen.get("IF-035", (None, ""))[1]
        ends_early = any(word in outcome for word in CHAIN_ENDING_EVENTS)
        expected = [
            step
            for step in order[first + 1 :]
            if step in taken_part and not (ends_early and step == "IF-036")
        ]
        missing = [step for step in expected if step not in seen]
        if not missing:
            complete += 1
            continue
        step = missing[0]
        deadline = started_at + APPOINTMENT_STEPS[step][1]
        if now <= deadline:
            pending += 1
            continue
        incomplete.append(
            {
                "mpan": mpan,
                "missing_step": step,
                "missing": APPOINTMENT_STEPS[step][0],
                "started_at": started_at.isoformat(),
                "deadline": deadline.isoformat(),
                "seen": sorted(seen, key=order.index),
            }
        )
    total = len(chains)
    status = (
        ResultStatus.BREACH if incomplete else ResultStatus.PENDING if pending else ResultStatus.OK
    )
    summary = (
        # No MPAN here: the summary is shown to viewers, who see aggregates only.
        f"{len(incomplete)} chain(s) overdue, the first lacking"
        f" {incomplete[0]['missing_step']} ({incomplete[0]['missing']})"
        if incomplete
        else f"{complete} complete, {pending} within deadline"
    )
    return [
        Verdict(
            control=Control.APPOINTMENT_CHAIN,
            status=status,
            expected=total,
            found=complete,
            window_from=since,
            window_to=now,
            summary=summary,
            detail={
                "steps_expected": sorted(taken_part, key=order.index),
                "pending": pending,
                "incomplete": incomplete[:DETAIL_LIMIT],
                "incomplete_total": len(incomplete),
            },
        )
    ]


def check_daily_consumption(*, now: datetime) -> list[Verdict]:
    """IF-021 arrives daily per MPAN: every MPAN seen on the channel in the week before carried
    one in the last 24 hours."""
    verdicts = []
    recent_from = now - timedelta(days=1)
    since = now - CONSUMPTION_LOOKBACK
    for channel in live_channels():
        if channel.interface_id != "IF-021":
            continue
        with db.cursor() as cursor:
            # One pass over the channel's IF-021 of the lookback (partitions pruned by id).
            cursor.execute(
                "SELECT mpan, max(id) FROM messaging_message WHERE tenant_id = %s"
                " AND id >= %s AND connection_id = %s AND direction = %s"
                " AND interface_id = 'IF-021' AND mpan <> '' GROUP BY mpan",
                [
                    str(channel.tenant_id),
                    id_floor(since),
                    channel.connection_id,
                    channel.direction,
                ],
            )
            latest = {mpan: id_time(int(last)) for mpan, last in cursor.fetchall()}
        missing = sorted(mpan for mpan, at in latest.items() if at < recent_from)
        verdicts.append(
            Verdict(
                control=Control.DAILY_CONSUMPTION,
                channel=channel,
                status=ResultStatus.BREACH if missing else ResultStatus.OK,
                expected=len(latest),
                found=len(latest) - len(missing),
                window_from=recent_from,
                window_to=now,
                summary=(
                    f"{len(missing)} MPAN(s) without an IF-021 in the last 24 hours"
                    if missing
                    else f"{len(latest)} MPAN(s) with a daily IF-021"
                ),
                detail={
                    "missing_mpans": missing[:DETAIL_LIMIT],
                    "missing_total": len(missing),
                    "last_seen": {m: latest[m].isoformat() for m in missing[:DETAIL_LIMIT]},
                },
            )
        )
    return verdicts


# ---- Busbar's record vs the DIP's --------------------------------------------------------------


def check_dip_record(*, now: datetime, requeue: bool = True) -> list[Verdict]:
    """Per inbound channel, what the DIP holds for the tenant's DIP ID (``/replay`` over the
    window) against what Busbar received; each gap is asked for again by ``/requeue``.

    Every call leaves a ``DipExchange``. A connection without complete credentials, or a DIP that
    does not answer, is an ``error`` verdict naming why (the other channels still run)."""
    from messaging.credentials import dip_client_for
    from messaging.exchanges import record_call, record_failure
    from messaging.models import ExchangeOperation
    from tenants.certificates import CertificateError

    window_from, window_to = now - DIP_WINDOW, now - DIP_SETTLE
    by_connection: dict[int, list[Channel]] = defaultdict(list)
    for channel in live_channels(direction=Direction.INBOUND):
        by_connection[channel.connection_id].append(channel)
    verdicts: list[Verdict] = []
    for channels in by_connection.values():
        connection = channels[0].connection
        recipient = connection.identity.dip_id

        def failed(channel: Channel, reason: str) -> Verdict:
            return Verdict(
                control=Control.DIP_RECORD,
                channel=channel,
                status=ResultStatus.ERROR,
                expected=0,
                found=0,
                window_from=window_from,
                window_to=window_to,
                summary=reason[:300],
            )

        try:
            client = dip_client_for(connection=connection)
        except (CertificateError, ValueError) as exc:
            reason = "; ".join(getattr(exc, "messages", None) or [str(exc)])
            verdicts.extend(failed(c, f"cannot reach the DIP: {reason}") for c in channels)
            continue
        with client:
            for channel in channels:
                started_at = now
                try:
                    response = client.replay(
                        channel.interface_id,
                        recipient,
                        datetime_from=window_from,
                        datetime_to=window_to,
                    )
                except DipTransportError as exc:
                    record_failure(
                        connection=connection,
                        operation=ExchangeOperation.REPLAY,
                        error=exc,
                        started_at=started_at,
                        interface_id=channel.interface_id,
                    )
                    verdicts.append(failed(channel, f"/replay got no answer: {exc.reason}"))
                    continue
                record_call(
                    connection=connection,
                    operation=ExchangeOperation.REPLAY,
                    response=response,
                    started_at=started_at,
                    interface_id=channel.interface_id,
                )
                if not response.ok:
                    verdicts.append(
                        failed(channel, f"/replay answered {response.status}: {response.reason}")
                    )
                    continue
                try:
                    held = (
                        [m.transaction_id for m in parse_push(response.response_body)]
                        if response.data
                        else []
                    )
                except DeliveryError as exc:
                    verdicts.append(failed(channel, f"/replay's answer is unreadable: {exc}"))
                    continue
                ours = set(
                    Message.objects.filter(
                        direction=Direction.INBOUND, transaction_id__in=held
                    ).values_list("transaction_id", flat=True)
                )
                gaps = [txn for txn in held if txn not in ours]
                requeued, requeue_errors = 0, []
                if gaps and requeue:
                    for start in range(0, len(gaps), REQUEUE_BATCH):
                        batch = gaps[start : start + REQUEUE_BATCH]
                        try:
                            answer = client.requeue(
                                channel.interface_id, recipient, transaction_ids=batch
                            )
                        except DipTransportError as exc:
                            record_failure(
                                connection=connection,
                                operation=ExchangeOperation.REQUEUE,
                                error=exc,
                                started_at=now,
                                interface_id=channel.interface_id,
                            )
                            requeue_errors.append(exc.reason[:200])
                            continue
                        record_call(
                            connection=connection,
                            operation=ExchangeOperation.REQUEUE,
                            response=answer,
                            started_at=now,
                            interface_id=channel.interface_id,
                        )
                        if answer.ok:
                            requeued += len(batch)
                        else:
                            requeue_errors.append(f"{answer.status} {answer.reason}"[:200])
                if not gaps:
                    status, summary = ResultStatus.OK, f"Busbar holds all {len(held)} the DIP holds"
                elif requeued == len(gaps):
                    status = ResultStatus.FILLED
                    summary = f"{len(gaps)} message(s) missing from Busbar, requeued by the DIP"
                else:
                    status = ResultStatus.BREACH
                    summary = f"{len(gaps)} message(s) missing from Busbar, {requeued} requeued"
                verdicts.append(
                    Verdict(
                        control=Control.DIP_RECORD,
                        channel=channel,
                        status=status,
                        expected=len(held),
                        found=len(held) - len(gaps),
                        window_from=window_from,
                        window_to=window_to,
                        summary=summary,
                        detail={
                            "missing_transaction_ids": gaps[:DETAIL_LIMIT],
                            "missing_total": len(gaps),
                            "requeued": requeued,
                            "requeue_errors": requeue_errors,
                            "replay_truncated": len(held) >= DIP_REPLAY_LIMIT,
                        },
                    )
                )
    return verdicts


CONTROLS: dict[str, Callable[..., list[Verdict]]] = {
    Control.CADENCE: check_cadence,
    Control.ACKNOWLEDGED: check_acknowledged,
    Control.PROCESSED: check_processed,
    Control.APPOINTMENT_CHAIN: check_appointment_chains,
    Control.DAILY_CONSUMPTION: check_daily_consumption,
    Control.DIP_RECORD: check_dip_record,
}
