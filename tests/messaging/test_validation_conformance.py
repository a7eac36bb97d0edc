"""Conformance with the official DIP specification (``../shared/reference``; skipped without it).

- Messages generated from the official schemas (by Busbar's own generator, not copied examples)
  pass Busbar's syntactic stage under the imported official version, and every mutation that the
  reference validator (``jsonschema``, the pure-Python reference implementation) refuses is refused.
- Busbar's own schemas agree with the official ones: official-valid messages pass Busbar's, and
  messages generated from Busbar's (outlined blocks left out) pass the official.
- Fuzz: arbitrary JSON or bytes never crash the validators; they only produce findings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from messaging.validation import (
    SchemaRegistry,
    Severity,
    Stage,
    ValidationContext,
    validate_message,
)
from messaging.validation import schemas as builtin
from messaging.validation.openapi import ReadSpec, read_spec
from tests.messaging.schema_strategies import all_mutations, resolve, strategy

REPO_ROOT = Path(__file__).resolve().parents[2]
HYPOTHESIS = settings(
    max_examples=int(os.environ.get("VALIDATION_EXAMPLES", "10")),
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
BUILTIN = SchemaRegistry.builtin()
CONTEXT = ValidationContext(dip_ids=frozenset({"1000000001"}), role="SUP", environment="UIT")
DEMO_KEYS = sorted(builtin.builtin_schemas())


def reference_dir() -> Path | None:
    """The official spec folder: ``$DIP_REFERENCE_DIR`` or ``<repo>/../shared/reference``."""
    base = Path(os.environ.get("DIP_REFERENCE_DIR") or REPO_ROOT.parent / "shared" / "reference")
    spec = base / "dip-api-v2.1.0" if (base / "dip-api-v2.1.0").is_dir() else base
    return spec if (spec / "Interfaces-EventCodes-unresolved.yaml").is_file() else None


NO_SPEC = (
    "official DIP spec not found: set DIP_REFERENCE_DIR or place shared/reference beside the repo"
)
_FOLDER = reference_dir()
_SPEC = read_spec(_FOLDER) if _FOLDER is not None else None


@pytest.fixture(scope="module")
def official() -> ReadSpec:
    if _SPEC is None:
        pytest.skip(NO_SPEC)
    return _SPEC


@pytest.fixture(scope="module")
def official_registry(official: ReadSpec) -> SchemaRegistry:
    return SchemaRegistry.from_spec(official, name="official")


@pytest.fixture(scope="module")
def builtin_registry() -> SchemaRegistry:
    return SchemaRegistry.builtin()


def schema_of(spec: ReadSpec, key: tuple[str, str, str]) -> dict[str, Any]:
    return next(
        v.schema for v in spec.variants if (v.interface_id, v.schema_version, v.event_code) == key
    )


def syntactic(payload: Any, registry: SchemaRegistry) -> list[Any]:
    outcome = validate_message(payload, context=CONTEXT, registry=registry, stages=("syntactic",))
    return [f for f in outcome.findings if f.stage is Stage.SYNTACTIC]


def sample_keys(spec: ReadSpec | None) -> list[Any]:
    """The demo's variants plus every tenth of the others (all of them with VALIDATION_ALL=1)."""
    if spec is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason=NO_SPEC))]
    keys = sorted({(v.interface_id, v.schema_version, v.event_code) for v in spec.variants})
    if os.environ.get("VALIDATION_ALL"):
        return keys
    return sorted(set(DEMO_KEYS) | set(keys[::10]))


def test_the_reader_resolves_every_interface_of_the_specification(official):
    interfaces = {v.interface_id for v in official.variants}
    assert official.api_version == "2.1.0"
    assert {"IF-001", "IF-021", "IF-031", "IF-036", "IF-041", "REP-002"} <= interfaces
    assert len(official.variants) > 100
    for key in DEMO_KEYS:
        schema = schema_of(official, key)
        assert "$ref" not in json.dumps(schema).replace(
            '"$ref": "#/definitions/', ""
        )  # local refs only
    jsonschema.Draft4Validator.check_schema(schema_of(official, ("IF-021", "011", "[ActivePower]")))


def test_busbar_knows_exactly_the_official_variants_of_the_demo_interfaces(official):
    demo_interfaces = {
        "IF-001",
        "IF-021",
        "IF-031",
        "IF-032",
        "IF-033",
        "IF-034",
        "IF-035",
        "IF-036",
        "IF-041",
    }
    official_keys = {
        (v.interface_id, v.schema_version, v.event_code)
        for v in official.variants
        if v.interface_id in demo_interfaces
    }
    missing = official_keys - set(DEMO_KEYS)
    # Busbar's own schemas leave out the appointment chain's MDR and MTD events the demo never sends.
    assert {k[2] for k in missing} <= {
        "[SDS-MDRUpdate]",
        "[IMS-SendMTD]",
        "[SDS-MDROutcome]",
        "[DCC-MDROutcome]",
    }
    assert set(DEMO_KEYS) <= official_keys


@pytest.mark.parametrize("key", sample_keys(_SPEC), ids=lambda k: f"{k[0]}{k[2]}" if k else "none")
def test_generated_official_messages_pass_and_their_mutations_fail(
    official, official_registry, builtin_registry, key
):
    schema = schema_of(official, key)
    checked: list[str] = []
    reference = jsonschema.Draft4Validator(schema)

    @HYPOTHESIS
    @given(strategy(schema))
    def check(message: Any) -> None:
        assume(reference.is_valid(message))
        assert syntactic(message, official_registry) == [], key
        # Schema-valid but odd content (timestamps of zeros, any MPAN) never crashes the later
        # stages: they report, they do not raise.
        full = validate_message(message, context=CONTEXT, registry=official_registry)
        assert all(f.stage is not Stage.SYNTACTIC for f in full.findings)
        if key in DEMO_KEYS:
            assert syntactic(message, builtin_registry) == [], key
        for mutation in all_mutations(schema, message):
            if reference.is_valid(mutation.instance):
                continue  # e.g. a pattern that accepts the extra character
            found = syntactic(mutation.instance, official_registry)
            assert found, (key, mutation.kind, mutation.path)
            checked.append(mutation.kind)
            assert all(f.severity is Severity.FATAL for f in found)
            if key in DEMO_KEYS and _described(mutation.path):
                assert syntactic(mutation.instance, builtin_registry), (
                    key,
                    mutation.kind,
                    mutation.path,
                )

    check()
    # The mutations did run, of several kinds (a test that checked nothing would pass too), except
    # where the key's schema is a choice between shapes (IF-020's two [RelatedAdd] and
    # [RelatedRemove] shapes), which the mutations leave alone.
    if not any(k in resolve(schema, schema) for k in ("oneOf", "anyOf")):
        assert {"drop required", "unknown key"} <= set(checked), (key, set(checked))


def _described(path: tuple[Any, ...]) -> bool:
    """Whether Busbar's own schemas describe the block at ``path`` field by field."""
    if len(path) >= 2 and path[0] == "CustomBlock":
        return path[1] in builtin.BLOCKS
    return True


def _without_outlines(schema: dict[str, Any]) -> dict[str, Any]:
    """Busbar's schema with the outlined (unchecked) optional blocks left out."""
    out = json.loads(json.dumps(schema))
    custom = out["properties"]["CustomBlock"]["properties"]
    for name in [
        n for n, s in custom.items() if s in (builtin.OUTLINE_OBJECT, builtin.OUTLINE_ARRAY)
    ]:
        del custom[name]
    return out


@pytest.mark.parametrize("key", DEMO_KEYS, ids=lambda k: f"{k[0]}{k[2]}")
def test_messages_generated_from_busbars_schemas_pass_the_official(
    official, official_registry, key
):
    ours = _without_outlines(builtin.builtin_schemas()[key])
    mine = jsonschema.Draft4Validator(ours)

    @HYPOTHESIS
    @given(strategy(ours))
    def check(message: Any) -> None:
        assert mine.is_valid(message)
        # One of Busbar's schemas may serve several event codes: compare with the official
        # variant of the event code the message carries.
        s0 = message["CommonBlock"]["S0"]
        reference = jsonschema.Draft4Validator(
            schema_of(official, (s0["interfaceID"], s0["schemaVersion"], s0["eventCode"]))
        )
        errors = [e.message for e in reference.iter_errors(message)]
        assert errors == [], (key, errors)
        assert syntactic(message, official_registry) == []

    check()


# ---- fuzz ---------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, database=None)
@given(st.one_of(st.binary(max_size=300), JSON, JSON.map(lambda v: json.dumps(v).encode())))
def test_arbitrary_input_never_crashes_the_builtin_validator(raw):
    outcome = validate_message(raw, context=CONTEXT, registry=BUILTIN)
    assert outcome.ok or outcome.findings


@settings(max_examples=300, deadline=None, database=None)
@given(
    s0=st.fixed_dictionaries(
        {
            "interfaceID": st.sampled_from(["IF-021", "IF-041", "IF-001", "IF-999"])
            | st.text(max_size=8),
            "schemaVersion": st.sampled_from(["011", "001"]) | JSON,
            "eventCode": st.sampled_from(["[ActivePower]", "[ReadingRemote]"]) | JSON,
        }
    ),
    rest=st.dictionaries(st.sampled_from(["S1", "A0", "M0", "D0", "x"]), JSON, max_size=5),
    custom=JSON,
    big=st.integers(min_value=2**63, max_value=2**90),
)
def test_messages_that_look_like_dip_messages_never_crash(s0, rest, custom, big):
    registry = BUILTIN
    for payload in (
        {"CommonBlock": {"S0": s0, **rest}, "CustomBlock": custom},
        {"CommonBlock": {"S0": s0, **rest}, "CustomBlock": {"B900": {"MQID": big}}},
    ):
        outcome = validate_message(payload, context=CONTEXT, registry=registry)
        assert outcome.ok or outcome.findings
        assert all(isinstance(f.text, str) and f.path.startswith("$") for f in outcome.findings)


def test_fuzzing_the_official_validators_never_crashes(official_registry):
    @settings(max_examples=150, deadline=None, database=None)
    @given(custom=JSON, s1=JSON, event=st.sampled_from(["[ActivePower]", "[ReactivePower]"]))
    def check(custom: Any, s1: Any, event: str) -> None:
        payload = {
            "CommonBlock": {
                "S0": {"interfaceID": "IF-021", "schemaVersion": "011", "eventCode": event},
                "S1": s1,
            },
            "CustomBlock": custom,
        }
        outcome = validate_message(payload, context=CONTEXT, registry=official_registry)
        assert not outcome.ok
        assert {f.code for f in outcome.findings} == {"SYN-SCHEMA"}

    check()
