"""Evidence: Merkle proofs, the sealed ledger and its verification job, and evidence packs that a
standalone verifier checks offline and that fail, naming what changed, when tampered with."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import zipfile
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from prometheus_client import REGISTRY

from core.audit import record_event
from core.models import AuditEvent
from core.tenancy import tenant_context
from messaging import breakglass
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


def test_a_window_larger_than_a_seal_is_sealed_in_turn_reading_only_what_each_seal_holds(
    committed_db, settled_now, monkeypatch
) -> None:
    """A backlog's window is sealed a seal at a time, each holding the earliest entries left,
    and each seal reads only as many raw payloads and transitions as it can hold: every entry
    is sealed once, and the verification job (which reads each seal's whole window again)
    finds every seal exactly as its sources are."""
    monkeypatch.setattr(ledger, "MAX_ENTRIES_PER_SEAL", 4)
    world = build_world()
    for _ in range(3):
        _traffic(world.acme.id)  # 2 raw payloads, 1 transition and audit events each time
    with tenant_context(world.acme.id):
        everything = list(
            ledger.entries_in_window(
                tenant_id=world.acme.id,
                window_from=ledger.ID_EPOCH,
                window_to=datetime.now(UTC),
            )
        )
        with CaptureQueriesContext(connection) as queries:
            made = ledger.seal_until_current(tenant_id=world.acme.id)
        seals = list(Seal.objects.order_by("seq"))
        check = ledger.verify_ledger(tenant_id=world.acme.id)
    assert made == len(seals) >= 3
    assert all(seal.size <= 4 for seal in seals)
    assert sum(seal.size for seal in seals) == len(everything)
    assert [s.window_from for s in seals[1:]] == [s.window_to for s in seals[:-1]]
    reads = [
        q["sql"]
        for q in queries.captured_queries
        if "FROM messaging_raw" in q["sql"] or "FROM messaging_transition" in q["sql"]
    ]
    assert reads
    assert all(sql.endswith("LIMIT 5") for sql in reads), reads
    assert check.problems == []
    assert check.entries_checked == len(everything)


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


def test_the_summary_sums_the_raw_payloads_in_one_row(committed_db, settled_now) -> None:
    # One row per delivery would grow the summary, and the memory to draw its PDF, with traffic.
    world = build_world()
    _traffic(world.acme.id)
    pack = _pack(world)
    with zipfile.ZipFile(pack) as z:
        summary = z.read("summary.html").decode()
        manifest = json.loads(z.read("manifest.json"))
    raw_files = {n: f for n, f in manifest["files"].items() if n.startswith("raw/")}
    assert len(raw_files) == 2
    assert not any(name in summary for name in raw_files)
    total = sum(f["size"] for f in raw_files.values())
    assert f"<tr><td>raw/*.bin (2 payload files)</td><td></td><td>{total}</td>" in summary
    assert "<td>messages.jsonl</td>" in summary


def test_a_pack_for_one_interface_holds_only_its_messages_timeline_and_findings(
    committed_db, settled_now
) -> None:
    world = build_world()
    if021 = _traffic(world.acme.id)
    with tenant_context(world.acme.id):
        item = json.dumps({"payload": "other"}).encode()
        other = store.store_inbound_delivery(
            tenant_id=world.acme.id,
            connection_id=Connection.objects.get().id,
            channel_id=None,
            body=b"[" + item + b"]",
            headers={},
            messages=[
                store.InboundMessageFacts(
                    offset=1,
                    length=len(item),
                    sha256=hashlib.sha256(item).digest(),
                    transaction_id="T-IF-033-1",
                    interface_id="IF-033",
                )
            ],
        ).message_ids
        store.transition(
            tenant_id=world.acme.id,
            message_ids=other,
            from_state="received",
            to_state="valid",
            actor="validator",
        )
        finding = SimpleNamespace(
            stage="semantic", severity="warning", code="W1", path="$", text="odd", rule="r2"
        )
        store.record_findings(tenant_id=world.acme.id, findings=[(other[0], finding)])
        pack = EvidencePack.objects.create(
            requested_by="audrey",
            period_from=datetime.now(UTC) - timedelta(hours=1),
            period_to=datetime.now(UTC),
            interfaces=["IF-033"],
        )
    done = packs.generate_pack(tenant_id=world.acme.id, pack_id=pack.id)
    assert done is not None
    assert done.message_count == 1
    with zipfile.ZipFile(packs.pack_path(done)) as z:
        lines = {
            name: [json.loads(line) for line in z.read(name).splitlines()]
            for name in ("messages.jsonl", "timeline.jsonl", "findings.jsonl")
        }
    assert [m["id"] for m in lines["messages.jsonl"]] == other
    assert [t["message"] for t in lines["timeline.jsonl"]] == other
    assert [(f["message"], f["code"]) for f in lines["findings.jsonl"]] == [(other[0], "W1")]
    assert if021[0] not in {t["message"] for t in lines["timeline.jsonl"]}


def test_a_pack_holds_the_payload_of_a_message_sent_after_its_period(
    committed_db, settled_now, tmp_path
) -> None:
    """An outbound message accepted in the period may get its final bytes after it ends: the
    pack widens its ledger to that blob's seal and carries the blob."""
    world = build_world()
    with tenant_context(world.acme.id):
        conn = Connection.objects.get()
        channel = Channel.objects.get(connection=conn)
        _, ids = store.store_outbound_messages(
            tenant_id=world.acme.id,
            connection_id=conn.id,
            channel_id=channel.id,
            source_body=b'{"messages": []}',
            headers={},
            messages=[store.OutboundMessageFacts(interface_id="IF-021")],
        )
    period_to = datetime.now(UTC) + timedelta(milliseconds=5)
    sealed_to = period_to + timedelta(milliseconds=5)
    while datetime.now(UTC) <= sealed_to + timedelta(milliseconds=5):
        pass  # the payload's id must fall after the period and after the first seal
    with tenant_context(world.acme.id):
        # A seal ending just after the period: the payload is then only in a later seal, one
        # the period alone would not bring into the pack.
        assert ledger.seal_tenant(tenant_id=world.acme.id, now=sealed_to) is not None
        raw_id = store.attach_payloads(
            tenant_id=world.acme.id,
            connection_id=conn.id,
            channel_id=channel.id,
            payloads=[(ids[0], b'{"a":1}', "S-1")],
        )
        pack = EvidencePack.objects.create(
            requested_by="audrey",
            period_from=period_to - timedelta(hours=1),
            period_to=period_to,
            include_payloads=True,
        )
    assert raw_id >= id_floor(sealed_to)
    done = packs.generate_pack(tenant_id=world.acme.id, pack_id=pack.id)
    assert done is not None
    assert done.message_count == 1
    path = packs.pack_path(done)
    with zipfile.ZipFile(path) as z:
        manifest = json.loads(z.read("manifest.json"))
        assert z.read(f"raw/{raw_id}.bin") == b'{"a":1}'
        sealed = [
            json.loads(line)["record"] for line in z.read("ledger/entries.jsonl").splitlines()
        ]
    assert raw_id in manifest["raw_included"]
    assert {"source": "raw", "id": raw_id} in [
        {"source": r["source"], "id": r["id"]} for r in sealed if r["source"] == "raw"
    ]
    key = tmp_path / "evidence-key.pem"
    key.write_bytes(keys.public_key_pem())
    result = _run_standalone(path, tmp_path, "--key", str(key))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 messages" in result.stdout


def _pdf_outline(pdf: bytes) -> list[str]:
    """The bookmark titles WeasyPrint makes from a PDF's headings (they sit in compressed object
    streams; titles are plain PDF strings for ASCII text)."""
    titles: list[str] = []
    for stream in re.finditer(rb"stream\n(.*?)\nendstream", pdf, re.S):
        try:
            body = zlib.decompress(stream.group(1))
        except zlib.error:
            continue
        titles += [t.decode() for t in re.findall(rb"/Title \(([^)]*)\)/Dest", body)]
    return titles


def test_a_pack_carries_its_summary_as_pdf_too(committed_db, settled_now, tmp_path):
    if packs.pdf_renderer() is None:
        if os.environ.get("BUSBAR_REQUIRE_PDF") == "1":
            pytest.fail("BUSBAR_REQUIRE_PDF=1 but WeasyPrint cannot load Pango")
        pytest.skip(
            "WeasyPrint cannot load Pango (apt-get install libpango-1.0-0 libpangoft2-1.0-0)"
        )
    world = build_world()
    _traffic(world.acme.id)
    pack = _pack(world)
    with zipfile.ZipFile(pack) as z:
        pdf = z.read("summary.pdf")
        manifest = json.loads(z.read("manifest.json"))
    assert pdf.startswith(b"%PDF-")
    assert pdf.rstrip().endswith(b"%%EOF")
    assert manifest["files"]["summary.pdf"]["sha256"] == hashlib.sha256(pdf).hexdigest()
    assert "summary_pdf_omitted" not in manifest
    outline = _pdf_outline(pdf)
    assert outline[0] == "Evidence pack: Acme Energy Supply"
    assert {"Messages by direction and state", "Ledger", "How to verify"} <= set(outline)
    key = tmp_path / "evidence-key.pem"
    key.write_bytes(keys.public_key_pem())
    result = _run_standalone(pack, tmp_path, "--key", str(key))  # the PDF is covered too
    assert result.returncode == 0, result.stdout + result.stderr


def test_without_pango_a_pack_says_why_it_has_no_pdf_and_still_verifies(
    committed_db, settled_now, tmp_path, monkeypatch
):
    monkeypatch.setattr(packs, "pdf_renderer", lambda: None)
    world = build_world()
    _traffic(world.acme.id)
    pack = _pack(world)
    with zipfile.ZipFile(pack) as z:
        assert "summary.pdf" not in z.namelist()
        manifest = json.loads(z.read("manifest.json"))
    assert "libpango" in manifest["summary_pdf_omitted"]
    key = tmp_path / "evidence-key.pem"
    key.write_bytes(keys.public_key_pem())
    assert _run_standalone(pack, tmp_path, "--key", str(key)).returncode == 0


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


def test_a_pack_shows_break_glass_accesses_tied_to_the_sealed_ledger(
    committed_db, settled_now, tmp_path
) -> None:
    world = build_world()
    ids = _traffic(world.acme.id)
    staff = get_user_model().objects.create_user("sam", password="x" * 16, is_staff=True)
    grant = breakglass.grant_break_glass(
        tenant_id=world.acme.id,
        staff=staff,
        reason="INC-3 checking IF-021 payloads",
        duration=timedelta(hours=1),
    )
    breakglass.read_message_content(tenant_id=world.acme.id, message_id=ids[0], staff=staff)
    breakglass.end_break_glass(
        tenant_id=world.acme.id, grant_id=grant.id, ended_by="support:sam", actor_user_id=staff.pk
    )
    pack = _pack(world)
    key = tmp_path / "evidence-key.pem"
    key.write_bytes(keys.public_key_pem())
    result = _run_standalone(pack, tmp_path, "--key", str(key))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 break-glass accesses" in result.stdout
    with zipfile.ZipFile(pack) as z:
        accesses = [json.loads(line) for line in z.read("break_glass.jsonl").splitlines()]
        manifest = json.loads(z.read("manifest.json"))
        summary = z.read("summary.html").decode()
    assert [(a["kind"], a.get("sealed")) for a in accesses] == [
        ("grant", None),
        ("granted", True),
        ("read", True),
        ("ended", True),
    ]
    assert accesses[0]["reason"] == "INC-3 checking IF-021 payloads"
    assert accesses[0]["ended_by"] == "support:sam"
    assert accesses[2]["object_id"] == str(ids[0])
    assert manifest["counts"]["break_glass"] == 4
    assert "INC-3 checking IF-021 payloads" in summary

    # Someone holding the signing key rewrites who read the message and re-signs the manifest:
    # the file hashes and the signature then hold, but the sealed ledger still says otherwise.
    def reword(n, data):
        if n != "break_glass.jsonl":
            return data
        lines = [json.loads(line) for line in data.splitlines()]
        lines[2]["actor"] = "support:someone-else"
        return b"".join(json.dumps(line).encode() + b"\n" for line in lines)

    rewritten = _rewrite(pack, tmp_path / "reworded.zip", reword)
    resigned = tmp_path / "resigned.zip"
    with zipfile.ZipFile(rewritten) as source, zipfile.ZipFile(resigned, "w") as target:
        manifest = json.loads(source.read("manifest.json"))
        data = source.read("break_glass.jsonl")
        manifest["files"]["break_glass.jsonl"].update(
            size=len(data), sha256=hashlib.sha256(data).hexdigest()
        )
        manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
        for info in source.infolist():
            if info.filename == "manifest.json":
                target.writestr(info.filename, manifest_bytes)
            elif info.filename == "manifest.sig":
                target.writestr(info.filename, base64.b64encode(keys.sign(manifest_bytes)))
            else:
                target.writestr(info.filename, source.read(info.filename))
    report = verify(str(resigned), public_key_pem=keys.public_key_pem())
    assert [p for p in report.problems if "break-glass" in p] == [
        f"break-glass read (audit event {accesses[2]['audit_event']}): its actor differs from"
        " the sealed audit event"
    ]


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


def test_a_packs_progress_is_visible_while_it_is_being_built(
    committed_db, settled_now, monkeypatch
) -> None:
    """The build runs in one transaction; its progress is written where the console sees it
    during the build, not only once the pack is done."""
    world = build_world()
    _traffic(world.acme.id)
    seen: list[tuple[int, str]] = []
    certificates = packs._certificates

    def observed():
        with psycopg.connect(admin_conninfo(connection.settings_dict["NAME"])) as admin:
            seen.append(
                admin.execute(
                    f"SELECT progress, stage FROM {EvidencePack._meta.db_table}"
                    " WHERE state = 'running'"
                ).fetchone()
            )
        return certificates()

    monkeypatch.setattr(packs, "_certificates", observed)
    _pack(world)
    assert seen == [(55, "certificates")]
