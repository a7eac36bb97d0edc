"""Evidence: Merkle proofs, the sealed ledger and its verification job, and evidence packs that a
standalone verifier checks offline and that fail, naming what changed, when tampered with."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from prometheus_client import REGISTRY

from core.audit import record_event
from core.models import AuditEvent
from core.tenancy import tenant_context
from messaging.evidence import keys, ledger, packs, retention
from messaging.evidence.merkle import root_and_proofs
from messaging.evidence.verify_pack import leaf_hash, merkle_root, root_from_proof, verify
from messaging.models import EvidencePack, LedgerCheck, Message, Seal
from messaging.reconciliation.models import Control
from messaging.reconciliation.services import run_reconciliation
from messaging.store import services as store
from messaging.store.ids import id_floor
from tenants.models import Channel, Connection
from tests.conftest import admin_conninfo, build_world


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33])
def test_every_inclusion_proof_leads_to_the_root_and_a_changed_leaf_does_not(size) -> None:
    leaves = [leaf_hash({"n": n}) for n in range(size)]
    root, proofs = root_and_proofs(leaves)
    assert root == merkle_root(leaves)
    for index, proof in enumerate(proofs):
        assert root_from_proof(leaves[index], index, size, proof) == root
        assert root_from_proof(leaf_hash({"n": -1}), index, size, proof) != root
        if size > 1:
            assert root_from_proof(leaves[index], (index + 1) % size, size, proof) != root
    assert root_from_proof(leaves[0], size, size, proofs[0]) is None


def _traffic(tenant_id) -> list[int]:
    """Two deliveries, one message moved on, a finding and an audit event for the tenant."""
    with tenant_context(tenant_id):
        connection = Connection.objects.get()
        channel = Channel.objects.get()
        ids: list[int] = []
        for n in range(2):
            items = [json.dumps({"payload": {"n": n, "i": i}}).encode() for i in range(3)]
            body = b"[" + b",".join(items) + b"]"
            facts, position = [], 1
            for i, item in enumerate(items):
                facts.append(
                    store.InboundMessageFacts(
                        offset=position,
                        length=len(item),
                        sha256=hashlib.sha256(item).digest(),
                        transaction_id=f"T-{tenant_id}-{n}-{i}",
                        interface_id="IF-021",
                    )
                )
                position += len(item) + 1
            stored = store.store_inbound_delivery(
                tenant_id=tenant_id,
                connection_id=connection.id,
                channel_id=channel.id,
                body=body,
                headers={"X-DIP-Signature-Date": "2026-11-29T10:00:00.000Z"},
                messages=facts,
                response_status=201,
                response_body=b"[]",
            )
            ids += stored.message_ids
        store.transition(
            tenant_id=tenant_id,
            message_ids=ids[:1],
            from_state="received",
            to_state="invalid",
            actor="validator",
            reason="schema",
        )
        finding = SimpleNamespace(
            stage="syntactic", severity="fatal", code="SCHEMA", path="$", text="bad", rule="r1"
        )
        store.record_findings(tenant_id=tenant_id, findings=[(ids[0], finding)])
        record_event(action="message.replay_requested", actor="bob", object_id=ids[1])
    return ids


@pytest.fixture
def settled_now(settings):
    settings.BUSBAR_EVIDENCE_SETTLE_SECONDS = 0
    return settings


def test_seals_chain_cover_every_source_and_verify(committed_db, settled_now) -> None:
    world = build_world()
    _traffic(world.acme.id)
    with tenant_context(world.acme.id):
        first = ledger.seal_tenant(tenant_id=world.acme.id)
        assert first is not None
        assert first.seq == 1
        assert first.prev == ledger.GENESIS
        assert first.body["sources"]["raw"] == 2
        assert first.body["sources"]["transition"] == 1
        assert first.body["sources"]["audit"] >= 1
        assert ledger.seal_tenant(tenant_id=world.acme.id) is None  # nothing new
    _traffic(world.acme.id)
    with tenant_context(world.acme.id):
        second = ledger.seal_tenant(tenant_id=world.acme.id)
        assert second is not None
        assert second.prev == ledger.seal_hash(first)
        assert second.window_from == first.window_to
        check = ledger.verify_ledger(tenant_id=world.acme.id)
        assert check.problems == []
        assert check.seals_checked == 2
        assert check.entries_checked == first.size + second.size
    with tenant_context(world.globex.id):
        assert not Seal.objects.exists()  # another tenant's ledger is its own


def test_the_verification_job_names_an_entry_edited_behind_the_guard(
    committed_db, settled_now
) -> None:
    world = build_world()
    ids = _traffic(world.acme.id)
    with tenant_context(world.acme.id):
        ledger.seal_tenant(tenant_id=world.acme.id)
        raw_id = Message.objects.get(id=ids[0]).raw_id
    # A direct SQL edit as a superuser with the trigger disabled: what a rogue admin could do.
    with psycopg.connect(admin_conninfo(settings.DATABASES["default"]["NAME"])) as admin:
        admin.execute("SET session_replication_role = replica")
        admin.execute(
            "UPDATE messaging_raw SET body_sha256 = %s WHERE id = %s", [b"\x01" * 32, raw_id]
        )
        admin.execute("DELETE FROM messaging_transition WHERE tenant_id = %s", [world.acme.id])
        admin.commit()
    with tenant_context(world.acme.id):
        check = ledger.verify_ledger(tenant_id=world.acme.id)
        assert f"seal 1: raw {raw_id} changed after it was sealed" in check.problems
        assert any("transition" in p and "was sealed and is gone" in p for p in check.problems)
        alert = AuditEvent.objects.get(action="evidence.ledger_mismatch")
        assert alert.category == "security"
        assert LedgerCheck.objects.count() == 1
    scraped = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in REGISTRY.collect()
        for s in family.samples
    }
    assert scraped[("busbar_ledger_problems", (("tenant", "acme"),))] == len(check.problems)


def test_the_runtime_role_cannot_rewrite_a_seal(world) -> None:
    from django.db import DatabaseError, transaction

    with tenant_context(world.acme.id):
        record_event(action="x.y", actor="pytest")
    with (
        pytest.raises(DatabaseError, match="permission denied"),
        tenant_context(world.acme.id),
        transaction.atomic(),
    ):
        Seal.objects.update(root="0" * 64)


def _pack(world, *, include_payloads: bool = True) -> Path:
    with tenant_context(world.acme.id):
        pack = EvidencePack.objects.create(
            requested_by="audrey",
            period_from=datetime.now(UTC) - timedelta(hours=1),
            period_to=datetime.now(UTC),
            include_payloads=include_payloads,
        )
    done = packs.generate_pack(tenant_id=world.acme.id, pack_id=pack.id)
    assert done is not None, "generation failed"
    assert done.state == "ready"
    assert done.progress == 100
    assert done.message_count == 6
    path = packs.pack_path(done)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == done.sha256
    return path


def _run_standalone(pack: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    """Run the pack's own verify.py in isolation (-I: no site-packages of the project on the
    path but the interpreter's own, no current directory): as an auditor would."""
    with zipfile.ZipFile(pack) as z:
        (tmp_path / "verify.py").write_bytes(z.read("verify.py"))
    return subprocess.run(
        [sys.executable, "-I", str(tmp_path / "verify.py"), str(pack), *extra],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )


def test_a_pack_verifies_offline_with_the_published_key(committed_db, settled_now, tmp_path):
    world = build_world()
    _traffic(world.acme.id)
    _traffic(world.globex.id)
    pack = _pack(world)
    key = tmp_path / "evidence-key.pem"
    key.write_bytes(keys.public_key_pem())
    result = _run_standalone(pack, tmp_path, "--key", str(key))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "VERIFIED:" in result.stdout
    assert "6 messages" in result.stdout
    with zipfile.ZipFile(pack) as z:
        names = set(z.namelist())
        manifest = json.loads(z.read("manifest.json"))
        messages = [json.loads(line) for line in z.read("messages.jsonl").splitlines()]
    assert {"summary.html", "verify.py", "ledger/seals.jsonl", "timeline.jsonl"} <= names
    assert manifest["tenant"]["slug"] == "acme"
    assert manifest["spec_versions"]["in_force"] == "busbar-builtin"
    assert "exceptions.jsonl" in names
    assert {m["transaction_id"].split("-")[1] for m in messages} == {
        str(world.acme.id).split("-")[0]
    }
    assert len(manifest["raw_included"]) == 2
    call_command("verify_evidence", str(pack), "--key", str(key))


def _rewrite(pack: Path, out: Path, change) -> Path:
    with zipfile.ZipFile(pack) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = change(info.filename, source.read(info.filename))
            if data is not None:
                target.writestr(info.filename, data)
    return out


def test_any_tampering_fails_verification_and_names_what_changed(
    committed_db, settled_now, tmp_path
) -> None:
    world = build_world()
    _traffic(world.acme.id)
    pack = _pack(world)
    with zipfile.ZipFile(pack) as z:
        names = [n for n in z.namelist() if n not in ("manifest.json", "manifest.sig")]

    for name in names:

        def flip(n, data, target=name):
            if n != target:
                return data
            if not data:  # an empty file (no certificates in this world) gains a byte
                return b"\n"
            return bytes([data[0] ^ 1]) + data[1:]

        report = verify(str(_rewrite(pack, tmp_path / "flipped.zip", flip)))
        assert not report.ok, name
        assert any(p.startswith(f"{name}: altered") for p in report.problems), report.problems

    def drop_message(n, data):
        if n != "messages.jsonl":
            return data
        return b"\n".join(data.splitlines()[1:]) + b"\n"

    report = verify(str(_rewrite(pack, tmp_path / "dropped.zip", drop_message)))
    assert any(p.startswith("messages.jsonl: altered") for p in report.problems)
    assert any("5 messages, the manifest says 6" in p for p in report.problems)

    def add_file(n, data):
        return data

    added = _rewrite(pack, tmp_path / "added.zip", add_file)
    with zipfile.ZipFile(added, "a") as z:
        z.writestr("raw/forged.bin", b"a message nobody sent")
    report = verify(str(added))
    assert "raw/forged.bin: in the pack but not in the manifest (added)" in report.problems

    def remove_file(n, data):
        return None if n == "timeline.jsonl" else data

    report = verify(str(_rewrite(pack, tmp_path / "removed.zip", remove_file)))
    assert "timeline.jsonl: listed in the manifest but missing (removed)" in report.problems

    def forge_manifest(n, data):
        if n != "manifest.json":
            return data
        manifest = json.loads(data)
        manifest["counts"]["messages"] = 7
        return json.dumps(manifest).encode()

    key = io.BytesIO(keys.public_key_pem()).getvalue()
    report = verify(
        str(_rewrite(pack, tmp_path / "forged.zip", forge_manifest)), public_key_pem=key
    )
    assert "manifest.sig: the signature does not match manifest.json and this key" in (
        report.problems
    )
    result = _run_standalone(tmp_path / "forged.zip", tmp_path)
    assert result.returncode == 1
    assert "FAIL: manifest.sig" in result.stdout
    with pytest.raises(CommandError, match="did not verify"):
        call_command("verify_evidence", str(tmp_path / "forged.zip"))


def test_a_pack_period_must_be_settled(world) -> None:
    with tenant_context(world.acme.id), pytest.raises(ValueError, match="choose a period ending"):
        packs.request_pack(
            requested_by="audrey",
            period_from=datetime.now(UTC) - timedelta(hours=1),
            period_to=datetime.now(UTC),
        )


def test_retention_removes_old_payloads_and_the_ledger_still_verifies(world, settings) -> None:
    settings.BUSBAR_EVIDENCE_SETTLE_SECONDS = 0
    ids = _traffic(world.acme.id)
    with tenant_context(world.acme.id):
        fresh = Message.objects.get(id=ids[0])
        old_id = id_floor(datetime.now(UTC) - timedelta(days=3)) + 7
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO messaging_raw (tenant_id, id, kind, direction, connection_id,"
                " body_zstd, body_sha256, body_size) SELECT tenant_id, %s, 'delivery',"
                " 'inbound', connection_id, body_zstd, body_sha256, body_size FROM messaging_raw"
                " WHERE id = %s",
                [old_id, fresh.raw_id],
            )
        ledger.seal_tenant(tenant_id=world.acme.id)
        assert retention.purge_expired_payloads() == 0  # no policy: keep everything
        with pytest.raises(ValueError, match="at least 1 day"):
            retention.set_payload_retention(days=0, actor="alice")
        retention.set_payload_retention(days=2, actor="alice")
        assert retention.purge_expired_payloads() == 1
        with pytest.raises(LookupError, match="end of its retention"):
            store.raw_body(tenant_id=world.acme.id, raw_id=old_id)
        assert store.message_bytes(fresh)  # inside retention: still there
        assert ledger.verify_ledger(tenant_id=world.acme.id).problems == []
        assert AuditEvent.objects.filter(action="retention.payloads_removed").count() == 1
    with tenant_context(world.globex.id):
        assert retention.purge_expired_payloads() == 0  # acme's policy is acme's


def test_a_pack_carries_the_periods_reconciliation_results_and_open_items(
    committed_db, settled_now, tmp_path
) -> None:
    world = build_world()
    _traffic(world.acme.id)
    with tenant_context(world.acme.id):
        Channel.objects.update(expected_cadence=timedelta(minutes=5))
        Channel.objects.create(
            connection=Connection.objects.get(),
            interface_id="IF-041",
            direction="inbound",
            expected_cadence=timedelta(hours=1),
        )
        run_reconciliation(controls=[Control.CADENCE])
    pack = _pack(world)
    key = tmp_path / "evidence-key.pem"
    key.write_bytes(keys.public_key_pem())
    result = _run_standalone(pack, tmp_path, "--key", str(key))
    assert result.returncode == 0, result.stdout + result.stderr
    with zipfile.ZipFile(pack) as z:
        manifest = json.loads(z.read("manifest.json"))
        verdicts = [json.loads(line) for line in z.read("reconciliation.jsonl").splitlines()]
        open_items = json.loads(z.read("reconciliation_open_items.json"))
        summary = z.read("summary.html").decode()
    assert sorted((v["interface"], v["status"]) for v in verdicts) == [
        ("IF-021", "ok"),
        ("IF-041", "breach"),
    ]
    assert manifest["counts"]["reconciliation_results"] == 2
    assert [(i["interface"], i["status"]) for i in open_items] == [("IF-041", "breach")]
    assert "2 control verdicts" in summary
