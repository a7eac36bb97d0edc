"""Evidence packs carry the people's side of operations: exception handling (assignments,
comments, resolutions) and replays (request, checks, approval, messages, outcome), each tied to the
audit event the ledger sealed for it; the verifier proves every such step is sealed."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.tenancy import tenant_context
from messaging.evidence import keys, packs
from messaging.evidence.verify_pack import verify
from messaging.exceptions import handling
from messaging.exceptions.handling import Operator
from messaging.exceptions.models import MessageException
from messaging.exceptions.services import ExceptionSpec, raise_exceptions
from messaging.models import EvidencePack
from messaging.replay import services as replays
from tenants import services as tenant_services
from tenants.models import DipIdentity, Role
from tests.conftest import build_world
from tests.messaging.test_evidence import _traffic


def _operations(world) -> dict[str, int]:
    """An exception handled by bob, and a production requeue asked by bob, approved by petra."""
    tid = world.acme.id
    ids = _traffic(tid)
    bob = Operator("bob", world.bob.user.pk)
    with tenant_context(tid):
        raise_exceptions(
            specs=[ExceptionSpec(code="SCHEMA", title="bad", category="market_operations",
                                 message_id=ids[0])]
        )  # fmt: skip
        exc = MessageException.objects.get()
        handling.comment_on_exceptions(exception_ids=[exc.id], text="asked the sender", by=bob)
        handling.resolve_by_person(
            exception_ids=[exc.id], code="resent_by_sender", text="a corrected one came", by=bob
        )
        prd = tenant_services.create_connection(
            identity=DipIdentity.objects.get(),
            environment="PRD",
            dip_base_url="https://dip.example",
            api_key="acme-prd-api-key-789",
        )
        tenant_services.create_channel(connection=prd, interface_id="IF-021", direction="inbound")
        petra = tenant_services.create_user(
            username="petra", email="p@acme.example", password="x" * 16, roles=[Role.APPROVER]
        )
        now = datetime.now(UTC)
        window = {"interface_id": "IF-021", "window_from": now - timedelta(hours=2),
                  "window_to": now - timedelta(hours=1)}  # fmt: skip
        plan = replays.plan_window(kind="dip_requeue", connection=prd, **window)
        replay = replays.request_replay(
            plan=plan, reason_code="reconciliation_gap", reason_text="two missing", by=bob,
            **window,
        )  # fmt: skip
        replays.approve_replay(replay_id=replay.id, by=Operator("petra", petra.pk), note="ok")
    return {"exception": exc.id, "replay": replay.id}


def _pack(world) -> Path:
    with tenant_context(world.acme.id):
        pack = EvidencePack.objects.create(
            requested_by="audrey",
            period_from=datetime.now(UTC) - timedelta(hours=1),
            period_to=datetime.now(UTC),
        )
    done = packs.generate_pack(tenant_id=world.acme.id, pack_id=pack.id)
    assert done is not None
    assert done.state == "ready"
    return packs.pack_path(done)


def test_a_pack_carries_replays_and_exception_handling_and_proves_them_sealed(
    committed_db, settings, tmp_path
):
    settings.BUSBAR_EVIDENCE_SETTLE_SECONDS = 0
    world = build_world()
    made = _operations(world)
    path = _pack(world)
    report = verify(str(path), public_key_pem=keys.public_key_pem())
    assert report.ok, report.problems
    # two handling steps, and the replay's requested and approved
    assert report.checked["operator actions sealed"] == 4
    with zipfile.ZipFile(path) as z:
        manifest = json.loads(z.read("manifest.json"))
        steps = [json.loads(line) for line in z.read("exception_handling.jsonl").splitlines()]
        [replay] = [json.loads(line) for line in z.read("replays.jsonl").splitlines()]
    assert manifest["counts"]["exception_handling"] == 2
    assert [(s["exception"], s["action"], s["actor"]) for s in steps] == [
        (made["exception"], "commented", "bob"),
        (made["exception"], "resolved", "bob"),
    ]
    assert steps[1]["detail"]["code"] == "resent_by_sender"
    assert (replay["id"], replay["requested_by"], replay["decided_by"]) == (
        made["replay"], "bob", "petra",
    )  # fmt: skip
    assert replay["production"] is True
    assert {c["check"] for c in replay["checks"]} == {"idempotent", "partial", "approval"}
    assert [e["action"] for e in replay["audit_events"]] == ["replay.requested", "replay.approved"]

    # Someone holding the signing key rewrites a step to point at an event the ledger never
    # sealed, and re-signs the manifest: the pack still fails.
    forged = tmp_path / "forged.zip"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(forged, "w") as target:
        manifest = json.loads(source.read("manifest.json"))
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "exception_handling.jsonl":
                lines = [json.loads(line) for line in data.splitlines()]
                lines[0]["audit_event"] = "00000000-0000-0000-0000-000000000001"
                data = b"".join(json.dumps(line, sort_keys=True).encode() + b"\n" for line in lines)
                manifest["files"][info.filename]["sha256"] = hashlib.sha256(data).hexdigest()
                manifest["files"][info.filename]["size"] = len(data)
            if info.filename not in ("manifest.json", "manifest.sig"):
                target.writestr(info.filename, data)
        manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
        target.writestr("manifest.json", manifest_bytes)
        target.writestr("manifest.sig", base64.b64encode(keys.sign(manifest_bytes)))
    forged_report = verify(str(forged), public_key_pem=keys.public_key_pem())
    assert not forged_report.ok
    assert any("is not in the sealed ledger" in p for p in forged_report.problems)
