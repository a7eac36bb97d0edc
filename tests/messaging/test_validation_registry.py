"""The schema registry in PostgreSQL: ``import_dip_spec`` (as the owner role), read-only access for
the runtime role, tenant pinning under RLS, and side-by-side comparison of spec versions.

Needs the official specification (``../shared/reference``) where noted; those tests skip without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import ProgrammingError, connection, transaction

from core.models import AuditEvent
from core.tenancy import tenant_context
from dipsim import messages as gen
from messaging.store import selectors as store_selectors
from messaging.store import services as store
from messaging.validation import (
    SchemaRegistry,
    Severity,
    ValidationContext,
    validate_batch,
    validate_message,
)
from messaging.validation.compare import compare_spec_versions
from messaging.validation.models import SpecSchema, SpecVersion, TenantValidationSettings
from messaging.validation.openapi import read_spec
from messaging.validation.selectors import (
    builtin_registry,
    default_spec_name,
    get_registry,
    get_registry_by_name,
    get_tenant_rules,
)
from messaging.validation.services import set_tenant_validation
from tenants.models import Channel, Connection
from tests.conftest import build_world

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTEXT = ValidationContext(dip_ids=frozenset({"1000000001"}), role="SUP", environment="UIT")


def reference_dir() -> Path | None:
    """The official spec folder: ``$DIP_REFERENCE_DIR`` or ``<repo>/../shared/reference``."""
    base = Path(os.environ.get("DIP_REFERENCE_DIR") or REPO_ROOT.parent / "shared" / "reference")
    spec = base / "dip-api-v2.1.0" if (base / "dip-api-v2.1.0").is_dir() else base
    return spec if (spec / "Interfaces-EventCodes-unresolved.yaml").is_file() else None


@pytest.fixture
def reference() -> Path:
    folder = reference_dir()
    if folder is None:
        pytest.skip(
            "official DIP spec not found: set DIP_REFERENCE_DIR or place shared/reference beside the repo"
        )
    return folder


@pytest.fixture
def imported(committed_db: None, reference: Path) -> str:
    """The official specification imported as ``2.1.0`` (committed; emptied after the test)."""
    call_command("import_dip_spec", str(reference), stdout=StringIO())
    return "2.1.0"


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def if021(**kw: object) -> dict:
    rng = random.Random(5)
    return gen.if021(
        sender="3000000001",
        mpan=gen.make_mpan(rng),
        day=gen.dt.date(2026, 3, 10),
        rng=rng,
        recipients=["1000000001"],
        **kw,
    )  # type: ignore[arg-type]


def if001_with_empty_b006() -> dict:
    payload = gen.if001(
        sender="4000000001",
        mpan="2000056535971",
        incoming=("1000000001", "ACME"),
        effective="2026-04-01T00:00:00+00:00",
    )
    payload["CustomBlock"]["B006"] = {}
    return payload


# ---- import -------------------------------------------------------------------------------------


def test_the_import_command_stores_one_schema_per_variant_once(committed_db, reference):
    expected = read_spec(reference)
    out = run("import_dip_spec", str(reference))
    assert "imported spec version 2.1.0" in out
    version = SpecVersion.objects.get(name="2.1.0")
    assert version.api_version == "2.1.0"
    assert version.digest == expected.digest
    keys = set(
        SpecSchema.objects.filter(spec=version).values_list(
            "interface_id", "schema_version", "event_code"
        )
    )
    assert len(keys) == version.schema_count == len(expected.variants)
    assert {
        ("IF-021", "011", "[ActivePower]"),
        ("IF-041", "011", "[ReadingCOS]"),
        ("IF-051", "001", "[EESRefresh]"),
    } <= keys

    again = run("import_dip_spec", str(reference))
    assert "already imported, unchanged" in again
    assert SpecSchema.objects.count() == len(expected.variants)

    run(
        "import_dip_spec", str(reference.parent), "--name", "2.1.0-copy"
    )  # the folder above works too
    assert sorted(SpecVersion.objects.values_list("name", flat=True)) == ["2.1.0", "2.1.0-copy"]


def test_the_imported_registry_validates_like_the_files_it_came_from(imported, reference):
    from_db = get_registry_by_name(imported)
    from_files = SchemaRegistry.from_spec(read_spec(reference), name="files")
    assert from_db.keys() == from_files.keys()
    key = ("IF-021", "011", "[ActivePower]")
    assert from_db.schema(key) == from_files.schema(key)
    assert get_registry_by_name(imported) is from_db  # compiled validators are kept
    good = validate_message(if021(), context=CONTEXT, registry=from_db, stages=("syntactic",))
    assert good.ok
    bad = if021()
    bad["CommonBlock"]["S1"]["environmentTag"] = "LIVE"
    finding = validate_message(bad, context=CONTEXT, registry=from_db).findings[0]
    assert (finding.code, finding.path, finding.rule) == (
        "SYN-SCHEMA",
        "$.CommonBlock.S1.environmentTag",
        "SCHEMA@2.1.0",
    )


def test_a_folder_that_is_not_a_specification_is_refused_and_nothing_is_written(
    committed_db, tmp_path
):
    with pytest.raises(CommandError, match=r"holds no Interfaces-EventCodes-unresolved\.yaml"):
        run("import_dip_spec", str(tmp_path))
    (tmp_path / "Interfaces-EventCodes-unresolved.yaml").write_text(
        "components: {schemas: {x: [unclosed\n"
    )
    with pytest.raises(CommandError, match="not valid YAML"):
        run("import_dip_spec", str(tmp_path), "--name", "broken")
    (tmp_path / "Interfaces-EventCodes-unresolved.yaml").write_text(
        "components:\n  schemas:\n    IF-900-Payload:\n      $ref: 'Elsewhere.yaml#/components/schemas/Gone'\n"
    )
    with pytest.raises(CommandError, match="missing schema"):
        run("import_dip_spec", str(tmp_path), "--name", "dangling")
    with pytest.raises(CommandError, match="reserved"):
        run("import_dip_spec", str(tmp_path), "--name", "busbar-builtin")
    assert SpecVersion.objects.count() == 0
    assert SpecSchema.objects.count() == 0


def test_a_name_holding_other_files_is_only_replaced_on_request(committed_db, reference, tmp_path):
    run("import_dip_spec", str(reference))
    first = SpecVersion.objects.get(name="2.1.0")
    old_registry = get_registry_by_name("2.1.0")
    changed = tmp_path / "spec"
    shutil.copytree(reference, changed)  # a scratch copy outside the repository, changed below
    target = changed / "DataTypes-unresolved.yaml"
    target.chmod(0o644)
    target.write_text(target.read_text() + "\n# a later edition\n")
    with pytest.raises(CommandError, match="imported from other files"):
        run("import_dip_spec", str(changed))
    assert SpecVersion.objects.get(name="2.1.0").id == first.id
    run("import_dip_spec", str(reference), "--make-default")
    run("import_dip_spec", str(changed), "--replace")
    replaced = SpecVersion.objects.get(name="2.1.0")
    assert replaced.is_default  # a replaced default stays the default
    assert replaced.id != first.id
    assert replaced.digest != first.digest
    assert SpecSchema.objects.filter(spec_id=first.id).count() == 0
    assert get_registry_by_name("2.1.0") is not old_registry  # the cache noticed


def test_the_runtime_role_reads_the_registry_and_cannot_write_it(committed_db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        assert cursor.fetchone()[0] == settings.DB_RUNTIME_ROLE
        cursor.execute("SELECT count(*) FROM messaging_specversion")
        assert cursor.fetchone()[0] == 0
    for statement in (
        "INSERT INTO messaging_specversion (name, api_version, source, digest, schema_count, imported_at)"
        " VALUES ('x', '', '', '', 0, now())",
        "UPDATE messaging_specschema SET schema = '{}'",
        "DELETE FROM messaging_specversion",
        "TRUNCATE messaging_specschema",
    ):
        with (
            pytest.raises(ProgrammingError, match="permission denied"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement)


# ---- pinning ------------------------------------------------------------------------------------


def test_without_an_imported_spec_the_builtin_schemas_serve(committed_db):
    world = build_world()
    assert default_spec_name() == "busbar-builtin"
    with tenant_context(world.acme.id):
        assert get_registry(tenant_id=world.acme.id) is builtin_registry()


def test_importing_changes_no_live_validation_until_made_default(imported, reference):
    assert default_spec_name() == "busbar-builtin"
    out = run("import_dip_spec", str(reference), "--make-default")
    assert "already imported, unchanged" in out
    assert "it is the default" in out
    assert default_spec_name() == "2.1.0"
    run("import_dip_spec", str(reference), "--name", "2.1.0-b", "--make-default")
    assert list(SpecVersion.objects.filter(is_default=True).values_list("name", flat=True)) == [
        "2.1.0-b"
    ]
    run("import_dip_spec", str(reference), "--name", "2.1.0-c")
    assert default_spec_name() == "2.1.0-b"


def test_a_tenant_is_pinned_to_a_spec_version_under_rls(imported):
    run("import_dip_spec", "--make-default", str(reference_dir()))
    world = build_world()
    with tenant_context(world.acme.id):
        assert get_registry(tenant_id=world.acme.id).name == "2.1.0"  # the default
        set_tenant_validation(tenant_id=world.acme.id, spec_version="busbar-builtin")
        assert get_registry(tenant_id=world.acme.id).name == "busbar-builtin"
        with pytest.raises(ValueError, match=r"'9\.9\.9' is not imported"):
            set_tenant_validation(tenant_id=world.acme.id, spec_version="9.9.9")
        assert TenantValidationSettings.objects.get().spec_version == "busbar-builtin"
    with tenant_context(world.globex.id):
        assert TenantValidationSettings.objects.count() == 0  # acme's row is invisible
        assert get_registry(tenant_id=world.globex.id).name == "2.1.0"
    with tenant_context(world.acme.id):
        set_tenant_validation(tenant_id=world.acme.id, spec_version="")
        assert get_registry(tenant_id=world.acme.id).name == "2.1.0"


def test_tenant_rules_come_from_the_settings_row(committed_db):
    world = build_world()
    with tenant_context(world.acme.id):
        assert get_tenant_rules(tenant_id=world.acme.id).mpan_check is Severity.WARNING
        set_tenant_validation(
            tenant_id=world.acme.id,
            mpan_check="off",
            late_after_days=30,
            business_rules={"BUS-NEGATIVE-CONSUMPTION": {"severity": "error"}},
        )
        rules = get_tenant_rules(tenant_id=world.acme.id)
        event = AuditEvent.objects.filter(action="validation.settings_changed").latest("id")
        assert event.detail["mpan_check"] == "off"
        assert rules.mpan_check is None
        assert rules.late_after_days == 30
        assert rules.business["BUS-NEGATIVE-CONSUMPTION"].severity is Severity.ERROR
        for bad in (
            {"mpan_check": "loud"},
            {"late_after_days": -1},
            {"business_rules": {"BUS-NOPE": {}}},
        ):
            with pytest.raises(
                ValueError, match=r"mpan_check|late_after_days|unknown business rule"
            ):
                set_tenant_validation(tenant_id=world.acme.id, **bad)  # type: ignore[arg-type]
        row = TenantValidationSettings.objects.get()
        assert (row.mpan_check, row.late_after_days) == ("off", 30)
    with tenant_context(world.globex.id):
        assert get_tenant_rules(tenant_id=world.globex.id).mpan_check is Severity.WARNING


# ---- side by side -------------------------------------------------------------------------------


def test_what_would_fail_under_the_official_version(imported):
    messages = [("if021", if021()), ("if001-b006", if001_with_empty_b006())]
    result = compare_spec_versions(
        messages=messages,
        context=CONTEXT,
        base=builtin_registry(),
        candidate=get_registry_by_name(imported),
    )
    assert result.total == 2
    assert [d.label for d in result.newly_failing] == ["if001-b006"]
    diff = result.newly_failing[0]
    assert diff.only_base == ()
    assert {f.path for f in diff.only_candidate} == {"$.CustomBlock.B006"}
    reverse = compare_spec_versions(
        messages=messages,
        context=CONTEXT,
        base=get_registry_by_name(imported),
        candidate=builtin_registry(),
    )
    assert [d.label for d in reverse.newly_passing] == ["if001-b006"]


def test_the_compare_command_reads_payload_files(imported, tmp_path):
    (tmp_path / "a.json").write_text(
        json.dumps([{"payload": if021()}, {"payload": if001_with_empty_b006()}])
    )
    (tmp_path / "b.json").write_text(json.dumps(if021()))
    out = run(
        "compare_spec_versions", str(tmp_path), "--base", "busbar-builtin", "--candidate", imported
    )
    assert out.splitlines()[0].startswith(
        "3 messages: 1 would fail under 2.1.0 and pass under busbar-builtin"
    )
    assert f"{tmp_path / 'a.json'}[1]: ok -> invalid" in out
    assert "+ fatal SYN-SCHEMA $.CustomBlock.B006" in out
    with pytest.raises(CommandError, match="not imported"):
        run("compare_spec_versions", str(tmp_path), "--candidate", "3.0.0")


def store_delivery(world, payloads: list[dict]) -> list[int]:
    """Store payloads as one inbound delivery of acme's, as the webhook would; their ids."""
    items = [json.dumps({"payload": p}).encode() for p in payloads]
    body = b"[" + b",".join(items) + b"]"
    facts, position = [], 1
    for n, item in enumerate(items):
        facts.append(
            store.InboundMessageFacts(
                offset=position,
                length=len(item),
                sha256=hashlib.sha256(item).digest(),
                transaction_id=f"T-{n}",
                interface_id=payloads[n]["CommonBlock"]["S0"]["interfaceID"],
            )
        )
        position += len(item) + 1
    with tenant_context(world.acme.id):
        conn = Connection.objects.get()
        channel = Channel.objects.get(connection=conn)
        stored = store.store_inbound_delivery(
            tenant_id=world.acme.id, connection_id=conn.id, channel_id=channel.id, body=body,
            headers={}, messages=facts, response_status=201, response_body=b"[]",
        )  # fmt: skip
    return stored.message_ids


def test_stored_messages_are_compared_and_findings_fit_the_store(imported):
    world = build_world()
    ids = store_delivery(world, [if021(), if001_with_empty_b006()])
    out = run(
        "compare_spec_versions",
        "--tenant-id",
        str(world.acme.id),
        "--base",
        "busbar-builtin",
        "--candidate",
        imported,
    )
    assert out.splitlines()[0].startswith("2 messages: 1 would fail under 2.1.0")
    assert f"message {ids[1]} (inbound IF-001): ok -> invalid" in out
    with pytest.raises(CommandError, match="either payload files or --tenant-id"):
        run("compare_spec_versions", "--candidate", imported)

    # The store takes Busbar's findings as they are.
    with tenant_context(world.acme.id):
        registry = get_registry(tenant_id=world.acme.id, spec_version=imported)
        message = store_selectors.get_message(message_id=ids[-1])
        assert message is not None
        outcomes = validate_batch(
            [store.message_bytes(message)], context=CONTEXT, registry=registry
        )
        findings = [(ids[-1], f) for o in outcomes for f in o.findings]
        assert findings
        assert store.record_findings(
            tenant_id=world.acme.id, findings=findings, registry_version=registry.name
        ) == len(findings)
        stored = store_selectors.list_findings(message_id=ids[-1])
        assert [(f.stage, f.severity, f.code, f.path, f.rule) for f in stored] == [
            (str(f.stage), str(f.severity), f.code, f.path, f.rule) for _, f in findings
        ]
        assert {f.registry_version for f in stored} == {"2.1.0"}
