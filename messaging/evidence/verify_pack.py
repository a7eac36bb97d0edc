#!/usr/bin/env python3
"""Verify a Busbar evidence pack offline: python3 verify.py PACK.zip [--key evidence-key.pem]

This file is shipped inside every pack as ``verify.py``. It needs only the Python standard library
and the ``cryptography`` package: no database, no Busbar installation. It checks, and names exactly
what fails:

1. the manifest's Ed25519 signature, with the public key you obtained independently (``--key``);
   without it, the pack's own copy is used and the report says that this proves integrity only;
2. every file the manifest lists is present with its size and SHA-256, and nothing else was added;
3. every ledger seal's signature, and that the seals chain (each names the hash of the previous);
4. every ledger entry's inclusion proof leads to its seal's Merkle root (RFC 6962 hashing);
5. every message record points at a sealed raw entry, and, where raw bytes are included, that
   the bytes hash to the sealed digest and the message's slice to the message's digest.

Exit status 0 when everything holds, 1 otherwise. Busbar's ``manage.py verify_evidence`` runs this
same code.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field

FORMAT = "busbar-evidence/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
SIGNED_FILES = frozenset({MANIFEST, SIGNATURE})


# --- hashing shared with the ledger (RFC 6962 / RFC 9162 Merkle trees) ----------------------


def canonical(obj: object) -> bytes:
    """The one byte form of a record that Busbar hashes and signs."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def leaf_hash(record: dict) -> bytes:
    return hashlib.sha256(b"\x00" + canonical(record)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) of RFC 6962 over already-hashed leaves (the empty tree hashes to SHA-256 of "")."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)  # largest power of two below n
    return node_hash(merkle_root(leaves[:split]), merkle_root(leaves[split:]))


def root_from_proof(leaf: bytes, index: int, size: int, proof: list[bytes]) -> bytes | None:
    """The root an inclusion proof leads to (RFC 9162 section 2.1.3.2), or None if malformed."""
    if index < 0 or index >= size:
        return None
    fn, sn, result = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    return result if sn == 0 else None


def seal_digest(seal: dict) -> str:
    """What the next seal names as its predecessor: SHA-256 of the signed seal body."""
    return hashlib.sha256(canonical(seal["body"])).hexdigest()


# --- verification ----------------------------------------------------------------------------


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, text: str) -> None:
        self.problems.append(text)

    def count(self, what: str, n: int = 1) -> None:
        self.checked[what] = self.checked.get(what, 0) + n


def _verify_signature(public_pem: bytes, signature: bytes, data: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(public_pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the evidence key is not an Ed25519 public key")
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def _jsonl(pack: zipfile.ZipFile, name: str, report: Report) -> Iterator[dict]:
    if name not in pack.namelist():
        return
    with pack.open(name) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except ValueError:
                report.fail(f"{name} line {number}: not JSON")


def verify(path: str, *, public_key_pem: bytes | None = None) -> Report:
    report = Report()
    try:
        pack = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        report.fail(f"{path}: not a readable ZIP ({exc})")
        return report
    with pack:
        names = set(pack.namelist())
        if MANIFEST not in names or SIGNATURE not in names:
            report.fail("the pack has no manifest.json or manifest.sig")
            return report
        manifest_bytes = pack.read(MANIFEST)
        try:
            manifest = json.loads(manifest_bytes)
        except ValueError:
            report.fail("manifest.json is not JSON")
            return report
        if manifest.get("format") != FORMAT:
            report.fail(f"manifest.json: unknown format {manifest.get('format')!r}")
            return report
        if public_key_pem is None:
            key_file = manifest.get("public_key_file", "evidence-public-key.pem")
            if key_file not in names:
                report.fail("no public key given and none in the pack")
                return report
            public_key_pem = pack.read(key_file)
            report.notes.append(
                "checked with the pack's own public key: this proves the pack is intact, not who"
                " made it; pass --key with the key Busbar publishes to prove that too"
            )
        try:
            signature = base64.b64decode(pack.read(SIGNATURE), validate=True)
            signed = _verify_signature(public_key_pem, signature, manifest_bytes)
        except ValueError as exc:
            report.fail(f"manifest.sig: {exc}")
            signed = False
        if not signed:
            report.fail("manifest.sig: the signature does not match manifest.json and this key")
        report.count("manifest signature")

        listed: dict[str, dict] = manifest.get("files", {})
        for name in sorted(names - set(listed) - SIGNED_FILES):
            report.fail(f"{name}: in the pack but not in the manifest (added)")
        for name, facts in sorted(listed.items()):
            if name not in names:
                report.fail(f"{name}: listed in the manifest but missing (removed)")
                continue
            digest, size = hashlib.sha256(), 0
            with pack.open(name) as handle:
                while chunk := handle.read(1 << 16):
                    digest.update(chunk)
                    size += len(chunk)
            if size != facts.get("size") or digest.hexdigest() != facts.get("sha256"):
                report.fail(
                    f"{name}: altered (sha256 {digest.hexdigest()[:16]}… size {size}, the manifest"
                    f" says {str(facts.get('sha256'))[:16]}… size {facts.get('size')})"
                )
            report.count("files")

        _verify_ledger(pack, manifest, public_key_pem, report)
    return report


def _verify_ledger(
    pack: zipfile.ZipFile, manifest: dict, public_key_pem: bytes, report: Report
) -> None:
    seals: dict[int, dict] = {}
    previous: dict | None = None
    for seal in _jsonl(pack, "ledger/seals.jsonl", report):
        body = seal.get("body", {})
        seq = body.get("seq")
        try:
            good = _verify_signature(
                public_key_pem, base64.b64decode(seal.get("signature", "")), canonical(body)
            )
        except ValueError:
            good = False
        if not good:
            report.fail(f"ledger seal {seq}: the signature does not match")
        if previous is not None:
            if body.get("prev") != seal_digest(previous):
                report.fail(f"ledger seal {seq}: does not chain to seal {previous['body']['seq']}")
            if seq != previous["body"]["seq"] + 1:
                report.fail(f"ledger seal {seq}: follows seal {previous['body']['seq']} (a gap)")
        seals[seq] = seal
        previous = seal
        report.count("seals")

    sealed_raw: dict[int, dict] = {}
    sealed_audit: dict[str, dict] = {}
    for entry in _jsonl(pack, "ledger/entries.jsonl", report):
        found = seals.get(entry.get("seal", -1))
        record = entry.get("record", {})
        label = f"ledger entry {record.get('source')} {record.get('id')}"
        if found is None:
            report.fail(f"{label}: its seal {entry.get('seal')} is not in the pack")
            continue
        body = found["body"]
        try:
            proof = [bytes.fromhex(p) for p in entry.get("proof", [])]
        except ValueError:
            report.fail(f"{label}: malformed proof")
            continue
        root = root_from_proof(leaf_hash(record), entry.get("index", -1), body["size"], proof)
        if root is None or root.hex() != body["root"]:
            report.fail(f"{label}: not included in seal {body['seq']} (its proof fails)")
        if record.get("source") == "raw":
            sealed_raw[record["id"]] = record
        elif record.get("source") == "audit":
            sealed_audit[str(record.get("id"))] = record
        report.count("ledger entries")

    sealed_until = max((str(s["body"].get("to") or "") for s in seals.values()), default="")
    _verify_operator_actions(pack, manifest, sealed_audit, sealed_until, report)

    included = set(manifest.get("raw_included", []))
    raw_cache: dict[int, bytes] = {}
    for message in _jsonl(pack, "messages.jsonl", report):
        raw_id = message.get("raw_id")
        label = f"message {message.get('id')}"
        if raw_id is None:
            report.count("messages")
            continue  # an outbound message not yet built has no bytes to prove
        raw = sealed_raw.get(raw_id)
        if raw is None:
            report.fail(f"{label}: its raw blob {raw_id} is not a sealed ledger entry")
            continue
        if raw_id in included:
            name = f"raw/{raw_id}.bin"
            if name not in pack.namelist():
                report.fail(f"{label}: raw/{raw_id}.bin is missing")
                continue
            body_bytes = raw_cache.get(raw_id)
            if body_bytes is None:
                body_bytes = raw_cache[raw_id] = pack.read(name)
                if hashlib.sha256(body_bytes).hexdigest() != raw["sha256"]:
                    report.fail(f"raw/{raw_id}.bin: does not hash to its sealed digest")
            piece = body_bytes[message["offset"] : message["offset"] + message["length"]]
            if hashlib.sha256(piece).hexdigest() != message.get("sha256"):
                report.fail(f"{label}: its bytes do not hash to its digest")
        report.count("messages")
    _verify_break_glass(pack, sealed_audit, report)
    expected = manifest.get("counts", {}).get("messages")
    if expected is not None and report.checked.get("messages", 0) != expected:
        report.fail(
            f"messages.jsonl: {report.checked.get('messages', 0)} messages, the manifest says"
            f" {expected}"
        )


def _verify_break_glass(
    pack: zipfile.ZipFile, sealed_audit: dict[str, dict], report: Report
) -> None:
    """Every break-glass access the pack reports as sealed is the very audit event the ledger
    sealed (same action, same actor, same object), so none was reworded or invented later."""
    for access in _jsonl(pack, "break_glass.jsonl", report):
        event_id = access.get("audit_event")
        if event_id is None:
            report.count("break-glass grants")
            continue
        label = f"break-glass {access.get('kind')} (audit event {event_id})"
        sealed = sealed_audit.get(str(event_id))
        if sealed is None:
            if access.get("sealed"):
                report.fail(f"{label}: not among the sealed ledger entries")
            continue
        for field_name in ("action", "actor", "object_type", "object_id"):
            if sealed.get(field_name) != access.get(field_name):
                report.fail(f"{label}: its {field_name} differs from the sealed audit event")
        report.count("break-glass accesses")


def _operator_actions(pack: zipfile.ZipFile, report: Report) -> Iterator[tuple[str, str, str, str]]:
    """(where, audit event id, action, time) of every person's step the pack reports: the
    handling of exceptions and each step of each replay."""
    for step in _jsonl(pack, "exception_handling.jsonl", report):
        yield (
            f"exception {step.get('exception')} {step.get('action')}",
            str(step.get("audit_event") or ""),
            str(step.get("audit_action") or ""),
            str(step.get("at") or ""),
        )
    for replay in _jsonl(pack, "replays.jsonl", report):
        for event in replay.get("audit_events") or []:
            yield (
                f"replay {replay.get('id')} {event.get('action')}",
                str(event.get("id") or ""),
                str(event.get("action") or ""),
                str(event.get("at") or ""),
            )


def _verify_operator_actions(
    pack: zipfile.ZipFile,
    manifest: dict,
    sealed_audit: dict[str, dict],
    sealed_until: str,
    report: Report,
) -> None:
    """Each exception-handling step and replay step names the audit event the ledger sealed for
    it: that event must be a sealed entry with the same action. A step after the last seal in the
    pack is reported as not yet sealed (sealing runs in batches), never as proven."""
    counts = manifest.get("counts", {})
    for name, key in (
        ("exception_handling.jsonl", "exception_handling"),
        ("replays.jsonl", "replays"),
    ):
        if key in counts and name not in manifest.get("files", {}):
            report.fail(f"{name}: the manifest counts {counts[key]} records but lists no file")
    pending = 0
    for where, event_id, action, at in _operator_actions(pack, report):
        if not event_id:
            report.fail(f"{where}: names no audit event")
            continue
        sealed = sealed_audit.get(event_id)
        if sealed is not None:
            if sealed.get("action") != action:
                report.fail(
                    f"{where}: its audit event {event_id} was sealed as {sealed.get('action')!r}"
                )
            report.count("operator actions sealed")
        elif sealed_until and at and at < sealed_until:
            report.fail(f"{where}: its audit event {event_id} is not in the sealed ledger")
        else:
            pending += 1
    if pending:
        report.notes.append(f"{pending} operator action(s) after the last seal: not yet sealed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify a Busbar evidence pack offline.")
    parser.add_argument("pack", help="the evidence pack (.zip)")
    parser.add_argument("--key", help="Busbar's evidence public key (PEM), obtained independently")
    args = parser.parse_args(argv)
    key = None
    if args.key:
        with open(args.key, "rb") as handle:
            key = handle.read()
    report = verify(args.pack, public_key_pem=key)
    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(f"FAIL: {problem}")
    summary = ", ".join(f"{n} {what}" for what, n in sorted(report.checked.items()))
    print(("VERIFIED: " if report.ok else "NOT VERIFIED: ") + (summary or "nothing checked"))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
