"""Running the reconciliation controls for a tenant, keeping each run's results, and telling the
tenant's people about what needs them (quiet channels, open circuits).

``run_reconciliation`` runs in a worker (it calls the DIP), inside the tenant's context.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from core.audit import record_event
from messaging.exceptions.sla import past_sla_queryset
from messaging.models import BreakerState, ConnectionBreaker
from messaging.reconciliation.controls import CONTROLS, Verdict
from messaging.reconciliation.models import Control, ReconciliationResult, ResultStatus
from tenants import notices
from tenants.models import CircuitState, DownstreamEndpoint, Role

logger = logging.getLogger(__name__)

OPERATIONS_ROLES = [Role.TENANT_ADMIN, Role.MESSAGE_OPERATOR]
PAST_SLA_CONDITION = "exceptions_past_sla"


def run_reconciliation(
    *, now: datetime | None = None, controls: Iterable[str] | None = None, actor: str = "system"
) -> list[ReconciliationResult]:
    """Run ``controls`` (default: all) for the current tenant and store their verdicts as one
    run; a control that fails is stored as an ``error`` verdict and the others still run.
    Raises ValueError for an unknown control name."""
    now = now or timezone.now()
    names = list(controls) if controls is not None else list(CONTROLS)
    unknown = [n for n in names if n not in CONTROLS]
    if unknown:
        raise ValueError(f"unknown control(s) {unknown}; known: {sorted(CONTROLS)}")
    run_id = uuid.uuid4()
    results: list[ReconciliationResult] = []
    for name in names:
        try:
            with transaction.atomic():
                verdicts = CONTROLS[name](now=now)
        except Exception as exc:  # one broken control must not hide the others' results
            logger.exception("reconciliation.control_failed", extra={"control": name})
            verdicts = [
                Verdict(
                    control=name,
                    status=ResultStatus.ERROR,
                    expected=0,
                    found=0,
                    summary=f"the control failed: {type(exc).__name__}: {exc}"[:300],
                    window_from=now,
                    window_to=now,
                )
            ]
        results.extend(_store(run_id, now, verdicts))
    with transaction.atomic():
        if Control.CADENCE in names:
            notify_quiet_channels(results=results, now=now)
        notify_open_circuits(now=now)
        notify_exceptions_past_sla(now=now)
        gaps = [r for r in results if r.control == Control.DIP_RECORD and r.detail.get("requeued")]
        for result in gaps:
            record_event(
                action="reconciliation.gap_requeued",
                actor=actor,
                object_type="channel",
                object_id=result.channel_id,
                detail={
                    "run_id": str(run_id),
                    "requeued": result.detail["requeued"],
                    "transaction_ids": result.detail["missing_transaction_ids"],
                },
            )
    logger.info(
        "reconciliation.run",
        extra={
            "run_id": str(run_id),
            "results": len(results),
            "breaches": sum(r.status == ResultStatus.BREACH for r in results),
        },
    )
    return results


def _store(run_id: uuid.UUID, now: datetime, verdicts: list[Verdict]) -> list[ReconciliationResult]:
    return ReconciliationResult.objects.bulk_create(
        ReconciliationResult(
            run_id=run_id,
            control=v.control,
            channel=v.channel,
            interface_id=v.channel.interface_id if v.channel else "",
            direction=v.channel.direction if v.channel else "",
            window_from=v.window_from,
            window_to=v.window_to,
            expected=v.expected,
            found=v.found,
            status=v.status,
            summary=v.summary[:300],
            detail=v.detail,
            run_at=now,
        )
        for v in verdicts
    )


def notify_quiet_channels(*, results: list[ReconciliationResult], now: datetime) -> None:
    """A quiet channel notifies operations once (then daily while quiet); traffic clears it."""
    for result in results:
        if result.control != Control.CADENCE or result.channel is None:
            continue
        condition = f"channel_quiet:{result.channel_id}"
        if result.status == ResultStatus.BREACH:
            channel = result.channel
            notices.notify(
                condition=condition,
                roles=OPERATIONS_ROLES,
                level="warning",
                title=f"{channel.interface_id} ({channel.direction}) is quiet: {result.summary}",
                body=(
                    f"Channel {channel.interface_id} {channel.direction} on"
                    f" {channel.connection.identity} {channel.connection.environment} has carried"
                    f" nothing for longer than its expected cadence ({channel.expected_cadence}).\n"
                    f"Last traffic before: {result.detail.get('last_traffic_before') or 'never'}\n"
                    "Check the sender, the DIP's webhook registration, and the Reconciliation page."
                ),
                object_type="channel",
                object_id=channel.pk,
                now=now,
            )
        else:
            notices.clear(condition=condition, now=now)


def notify_exceptions_past_sla(*, now: datetime) -> None:
    """Unresolved exceptions past their SLA notify the people who handle them: one notice for
    the tenant naming how many and the most overdue (one per exception would bury a busy desk),
    repeated at the notice service's interval while any stays overdue, cleared when none does.
    Runs inside the tenant's context."""
    overdue = past_sla_queryset(now)
    count = overdue.count()
    if not count:
        notices.clear(condition=PAST_SLA_CONDITION, now=now)
        return
    lines = [
        f"- {exc.code} {exc.interface_id} due {exc.sla_due_at:%Y-%m-%d %H:%M} UTC"
        f" ({exc.get_to_act_display()} to act): {exc.title[:120]}"
        for exc in overdue[:5]
        if exc.sla_due_at
    ]
    notices.notify(
        condition=PAST_SLA_CONDITION,
        roles=[Role.MESSAGE_OPERATOR, Role.TENANT_ADMIN],
        level="critical" if overdue.filter(severity="fatal").exists() else "warning",
        title=f"{count} exception{'s' if count != 1 else ''} past {'their' if count != 1 else 'its'} SLA",
        body="The most overdue:\n" + "\n".join(lines) + "\nSee the Exceptions page, Past SLA.",
        object_type="exception",
        now=now,
    )


def notify_open_circuits(*, now: datetime) -> None:
    """An open circuit (the DIP for a connection, or a downstream system) notifies once; its
    closing clears the notice."""
    open_now: set[str] = set()
    for breaker in ConnectionBreaker.objects.select_related("connection__identity").filter(
        state=BreakerState.OPEN
    ):
        condition = f"circuit_open:connection:{breaker.connection_id}"
        open_now.add(condition)
        where = f"{breaker.connection.identity} {breaker.connection.environment}"
        notices.notify(
            condition=condition,
            roles=OPERATIONS_ROLES,
            level="critical",
            title=f"Sending to the DIP is paused for {where}: its circuit is open",
            body=(
                f"Busbar stopped sending after repeated failures ({breaker.last_error or 'no answer'}).\n"
                f"Open since: {breaker.opened_at:%Y-%m-%d %H:%M} UTC; next probe:"
                f" {breaker.probe_at:%H:%M} UTC. Submissions are kept and drain once it closes."
                if breaker.opened_at and breaker.probe_at
                else "Busbar stopped sending after repeated failures."
            ),
            object_type="connection",
            object_id=breaker.connection_id,
            now=now,
        )
    for endpoint in DownstreamEndpoint.objects.filter(circuit_state=CircuitState.OPEN):
        condition = f"circuit_open:endpoint:{endpoint.pk}"
        open_now.add(condition)
        notices.notify(
            condition=condition,
            roles=[Role.TENANT_ADMIN],
            level="warning",
            title=f"Delivery to {endpoint.name} is paused: its circuit is open",
            body=(
                f"{endpoint.url} failed repeatedly ({endpoint.last_failure or 'no answer'}).\n"
                "Events wait for it and are retried; see the Downstream page."
            ),
            object_type="downstream_endpoint",
            object_id=endpoint.pk,
            now=now,
        )
    notices.clear_all_except(prefix="circuit_open:", keep=open_now, now=now)
