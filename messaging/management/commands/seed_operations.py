"""Give the demo's operations pages something to show: a few acme messages that fail validation
(real messages, through the real store and pipeline, so their exceptions are routed as live ones
would be), and a production replay request from bob waiting for an approver (alice).

acme gets a production connection for this, not onboarded with dipsim (no credentials): its
messages are stored here directly, as if the DIP had pushed them. Run after ``seed_demo`` and
``seed_sample_clients`` (the replay redelivers to the sample client); a second run adds nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from core.tenancy import tenant_context
from dipsim import messages as dip
from messaging.exceptions.handling import Operator
from messaging.exceptions.models import MessageException
from messaging.inbound import processing
from messaging.replay import services as replays
from messaging.replay.models import Replay
from messaging.store import services as store
from messaging.validation.services import set_tenant_validation
from tenants import services
from tenants.management.commands.seed_demo import demo_tenant_id
from tenants.models import Connection, DipIdentity, Environment

SENDER = "1000000002"  # globex's smart data service sends acme its IF-021s


def _store(connection: Connection, payloads: list[dict[str, Any]], tag: str) -> list[int]:
    items = [json.dumps({"payload": p}, separators=(",", ":")).encode() for p in payloads]
    body = b"[" + b",".join(items) + b"]"
    facts, position = [], 1
    for n, (item, payload) in enumerate(zip(items, payloads, strict=True)):
        facts.append(
            store.InboundMessageFacts(
                offset=position,
                length=len(item),
                sha256=hashlib.sha256(item).digest(),
                transaction_id=f"T-DEMO-{tag}-{n}",
                interface_id="IF-021",
                event_code="ActivePower",
                mpan=payload["CommonBlock"]["M0"]["MPANCore"],
            )
        )
        position += len(item) + 1
    stored = store.store_inbound_delivery(
        tenant_id=str(connection.tenant_id),
        connection_id=connection.id,
        channel_id=None,
        body=body,
        headers={"seeded": "demo"},
        messages=facts,
    )
    return list(stored.message_ids)


def _if021(rng: random.Random, **kwargs: Any) -> dict[str, Any]:
    return dip.if021(
        sender=SENDER,
        mpan=dip.make_mpan(rng),
        day=dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1),
        rng=rng,
        recipients=["1000000001"],
        **kwargs,
    )


class Command(BaseCommand):
    help = "Seed demo exceptions and a pending production replay for acme."

    def handle(self, *args: Any, **options: Any) -> None:
        tenant_id = demo_tenant_id("acme")
        rng = random.Random(21)
        with tenant_context(tenant_id):
            if MessageException.objects.filter(transaction_id__startswith="T-DEMO-").exists():
                self.stdout.write("demo operations already seeded")
                return
            uit = Connection.objects.get(environment=Environment.UIT)
            # acme refuses negative consumption outright (the demo's business rule).
            set_tenant_validation(
                tenant_id=tenant_id,
                business_rules={"BUS-NEGATIVE-CONSUMPTION": {"severity": "error"}},
                actor="seed",
            )
        failing = [
            _if021(rng, env="PRD"),  # the sender's environment is wrong: the market party's
            _if021(rng, fault="negative"),  # acme's own rule refuses it: acme's to act
        ]
        with tenant_context(tenant_id):
            ids = _store(uit, failing, "EXC")
        processing.process_messages(tenant_id=tenant_id, message_ids=ids)
        with tenant_context(tenant_id):
            prd = Connection.objects.filter(environment=Environment.PRD).first()
            if prd is None:
                prd = services.create_connection(
                    identity=DipIdentity.objects.get(),
                    environment=Environment.PRD,
                    dip_base_url=uit.dip_base_url,
                    api_key="demo-acme-prd-not-onboarded",
                    actor="seed",
                )
            replayable = _store(prd, [_if021(rng, env="PRD")], "PRD")
        processing.process_messages(tenant_id=tenant_id, message_ids=replayable)
        with tenant_context(tenant_id):
            bob = get_user_model().objects.get(username="bob")
            plan = replays.plan_replay(kind="inbound", message_ids=replayable)
            if plan.blocked or Replay.objects.exists():
                self.stdout.write(f"no demo replay: {[c.text for c in plan.blocked]}")
                return
            replay = replays.request_replay(
                plan=plan,
                reason_code="downstream_outage",
                reason_text="Billing was down overnight and missed this reading.",
                by=Operator("bob", bob.pk),
            )
        self.stdout.write(
            f"seeded {len(ids)} demo exceptions and replay {replay.id} ({replay.state})"
        )
