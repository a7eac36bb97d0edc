"""The demo's operations pages are not empty: acme has exceptions routed as live ones are (one
its own to act on) and a production replay from bob waiting for an approver; a second run adds
nothing."""

from __future__ import annotations

import json

from django.core.management import call_command

from core.tenancy import tenant_context
from messaging.exceptions.models import MessageException
from messaging.replay.models import Replay
from tenants.management.commands.seed_demo import demo_tenant_id


def test_the_demo_seeds_exceptions_and_a_pending_production_replay(db, settings, tmp_path):
    call_command("seed_demo")
    settings.BUSBAR_DOWNSTREAM_ALLOW = "127.0.0.1:8701,127.0.0.1:8702"
    config = tmp_path / "sampleclients.json"
    config.write_text(
        json.dumps(
            {
                "acme": {"url": "http://127.0.0.1:8701/hooks", "secret": "whsec_" + "A" * 32},
                "globex": {"url": "http://127.0.0.1:8702/hooks", "secret": "whsec_" + "B" * 32},
            }
        )
    )
    call_command("seed_sample_clients", str(config))
    call_command("seed_operations")
    call_command("seed_operations")
    with tenant_context(demo_tenant_id("acme")):
        owners = sorted(MessageException.objects.filter(state="open").values_list("code", "to_act"))
        [replay] = Replay.objects.all()
    assert owners == [
        ("BUS-NEGATIVE-CONSUMPTION", "client"),
        ("CTX-ENVIRONMENT", "market_party"),
    ]
    assert (replay.state, replay.production, replay.requested_by) == ("pending", True, "bob")
    assert len(replay.message_ids) == 1
