"""Outbound in the console: an operator submits through the form, sees each attempt (certificates,
answer, latency) and the timeline, and resubmits a parked message with a reason; another tenant
gets a 404, a member who is not an operator cannot act."""

from __future__ import annotations

import json

import httpx
import pytest
from django.core.cache import cache
from django.test import Client

from core.tenancy import tenant_context
from messaging import credentials, tasks
from messaging.models import Message, Transition
from messaging.outbound import services as outbound
from tests.conftest import PASSWORD
from tests.messaging.test_outbound import acme_if041_channel, reading, run_pipeline


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, dipsim):
    cache.clear()
    credentials.DIP_CLIENTS.clear()
    httpx.delete(f"{dipsim.admin_url}/admin/faults")
    # The tests run the workers' services themselves; nothing is published to a broker.
    monkeypatch.setattr(tasks.prepare_outbound_task, "delay", lambda *args: None)
    monkeypatch.setattr(tasks.send_outbound_task, "delay", lambda *args: None)
    yield
    httpx.delete(f"{dipsim.admin_url}/admin/faults")
    credentials.DIP_CLIENTS.clear()
    cache.clear()


def signed_in(username: str) -> Client:
    client = Client()
    response = client.post("/login/", {"username": username, "password": PASSWORD})
    assert response.status_code == 302, response.content
    return client


def test_an_operator_submits_sees_the_attempts_and_resubmits_a_parked_message(
    committed_world, dipsim
):
    world = committed_world
    channel = acme_if041_channel(world.acme.id, dipsim)
    bob = signed_in("bob")
    assert "Submit a message" in bob.get("/outbound/").content.decode()

    # A refused credential set parks the message as a credentials incident.
    assert (
        httpx.post(
            f"{dipsim.admin_url}/admin/faults",
            json={"kind": "error", "channel": "IF-041", "remaining": 1, "params": {"status": 401}},
        ).status_code
        == 201
    )
    response = bob.post(
        "/outbound/submit/", {"channel": channel.id, "submission": json.dumps(reading())}
    )
    assert response.status_code == 302
    with tenant_context(world.acme.id):
        [message] = Message.objects.all()
    assert response["Location"] == f"/outbound/{message.id}/"
    run_pipeline(world.acme.id, [message.id])
    page = bob.get(f"/outbound/{message.id}/").content.decode()
    assert "failed" in page
    assert "401" in page
    assert "Resubmit" in page

    # Another member of acme who is no operator may look but not act; globex sees nothing.
    alice = signed_in("alice")
    assert alice.get(f"/outbound/{message.id}/").status_code == 200
    assert alice.post(f"/outbound/{message.id}/resubmit/", {"reason": "try"}).status_code == 403
    assert signed_in("charlie").get(f"/outbound/{message.id}/").status_code == 404

    assert bob.post(f"/outbound/{message.id}/resubmit/", {"reason": ""}).status_code == 302
    with tenant_context(world.acme.id):
        assert Message.objects.get(id=message.id).state == "failed"
    response = bob.post(
        f"/outbound/{message.id}/resubmit/", {"reason": "the DIP API key was replaced"}
    )
    assert response.status_code == 302
    with tenant_context(world.acme.id):
        assert Message.objects.get(id=message.id).state == "ready"
        resubmitted = Transition.objects.get(
            message_id=message.id, from_state="failed", to_state="ready"
        )
    assert resubmitted.actor == "bob"
    assert resubmitted.reason == "resubmitted: the DIP API key was replaced"
    assert outbound.send_outbound(tenant_id=world.acme.id, message_ids=[message.id]).sent == 1

    page = bob.get(f"/outbound/{message.id}/").content.decode()
    with tenant_context(world.acme.id):
        sent = Message.objects.get(id=message.id)
    assert sent.transaction_id in page
    assert page.count(" ms</td>") == 2  # both attempts, with their latency
    assert "the DIP API key was replaced" in page
    counts = bob.get("/outbound/").content.decode()
    assert "<td>IF-041</td><td>sent</td><td>1</td>" in counts
    listing = bob.get("/outbound/?state=sent", HTTP_HX_REQUEST="true").content.decode()
    assert str(message.id) in listing
    assert "<html" not in listing  # the fragment only


def test_a_bad_submission_in_the_form_names_each_problem_and_stores_nothing(
    committed_world, dipsim
):
    world = committed_world
    channel = acme_if041_channel(world.acme.id, dipsim)
    bad = {**reading(), "mpan": "123", "primary_recipients": ["x"]}
    response = signed_in("bob").post(
        "/outbound/submit/", {"channel": channel.id, "submission": json.dumps(bad)}
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "$.mpan" in page
    assert "$.primary_recipients[0]" in page
    with tenant_context(world.acme.id):
        assert not Message.objects.exists()


def test_the_outbox_depth_and_the_drain_progress_are_visible_to_the_tenant(committed_world, dipsim):
    import re

    from prometheus_client import REGISTRY

    world = committed_world
    channel = acme_if041_channel(world.acme.id, dipsim)
    with tenant_context(world.acme.id):
        ids = outbound.submit_messages(
            channel=channel, items=[reading(), reading(), reading()], actor="crm"
        )
        outbound.prepare_outbound(tenant_id=world.acme.id, message_ids=ids)
    bob = signed_in("bob")

    def outbox_row(html: str) -> str:
        found = re.search(r'<section id="outbox-status".*?</section>', html, re.S)
        assert found is not None, html
        return found.group(0)

    waiting = outbox_row(bob.get("/outbound/").content.decode())
    assert '<td class="outbox-depth">3</td>' in waiting
    assert "no drain yet" in waiting

    outbound.drain_connection(tenant_id=world.acme.id, connection_id=channel.connection_id)
    fragment = bob.get("/outbound/?part=outbox", HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in fragment  # the polled fragment only
    drained = outbox_row(fragment)
    assert '<td class="outbox-depth">0</td>' in drained
    assert "drained: " in drained
    assert "3 of 3 (100%)" in drained
    # globex's page shows none of acme's outbox.
    assert (
        f"<td>{channel.connection_id}</td>"
        not in signed_in("charlie").get("/outbound/").content.decode()
    )

    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in REGISTRY.collect()
        for s in family.samples
    }
    labels = frozenset({"tenant": "acme", "connection": str(channel.connection_id)}.items())
    assert samples[("busbar_outbound_drain_backlog", labels)] == 3
    assert samples[("busbar_outbound_drain_done", labels)] == 3
    assert samples[("busbar_outbound_draining", labels)] == 0
