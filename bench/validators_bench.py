"""Per-message cost of validating real IF-021 messages against the official schema (README.md).

Compares the compiled validators Busbar could use, on the same messages and the same resolved
official IF-021 schema (read from the specification folder at run time, never stored):

- ``fastjsonschema``: generates and compiles Python code per schema;
- ``jsonschema-rs``: a validator compiled in Rust (``is_valid`` on the hot path, ``iter_errors``
  only for a message that fails);
- ``jsonschema`` (pure Python), for reference, when installed (it comes with the test tools);
- Busbar's whole syntactic stage (``messaging.validation``: parse bytes, pick the variant, validate).

Messages come from dipsim's generator (48 UTC periods a day, valid MPANs, about 5 KB each). Prints
microseconds per message and messages per second; asserts nothing::

    .venv/bin/python bench/validators_bench.py --messages 2000 --spec ../shared/reference
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only")


def messages(count: int, seed: int = 7) -> list[dict[str, Any]]:
    from dipsim import messages as gen

    rng = random.Random(seed)
    day = dt.date(2026, 10, 1)
    return [
        gen.if021(
            sender="3000000001",
            mpan=gen.make_mpan(rng),
            day=day - dt.timedelta(days=i % 30),
            rng=rng,
            recipients=["1000000001"],
        )
        for i in range(count)
    ]


def timed(
    name: str, check: Callable[[Any], Any], items: list[Any], rounds: int, per: int = 1
) -> float:
    """Best-of-``rounds`` microseconds per message, an item holding ``per`` messages (the best
    round is the least disturbed one)."""
    for item in items[:50]:
        check(item)
    per_round = []
    for _ in range(rounds):
        start = time.perf_counter()
        for item in items:
            check(item)
        per_round.append((time.perf_counter() - start) / (len(items) * per) * 1e6)
    best, median = min(per_round), statistics.median(per_round)
    print(f"{name:44s} {best:9.1f} us/msg (median {median:8.1f})  {1e6 / best:10,.0f} msg/s")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--spec", default=str(REPO.parent / "shared" / "reference"))
    args = parser.parse_args()

    import fastjsonschema
    import jsonschema_rs

    from messaging.validation.openapi import read_spec

    spec = read_spec(args.spec)
    schema = next(
        v.schema
        for v in spec.variants
        if (v.interface_id, v.event_code) == ("IF-021", "[ActivePower]")
    )
    items = messages(args.messages)
    raw = [json.dumps(item).encode() for item in items]
    print(
        f"{len(items)} IF-021 messages, {statistics.mean(map(len, raw)):,.0f} bytes each on average;"
        f" official schema {spec.api_version}, best of {args.rounds} rounds"
    )

    t0 = time.perf_counter()
    fast = fastjsonschema.compile(schema, use_default=False)
    t1 = time.perf_counter()
    rust = jsonschema_rs.Draft4Validator(schema)
    t2 = time.perf_counter()
    print(
        f"compile: fastjsonschema {1e3 * (t1 - t0):.1f} ms, jsonschema-rs {1e3 * (t2 - t1):.1f} ms"
    )

    fast_us = timed("fastjsonschema (dict)", fast, items, args.rounds)
    rust_us = timed("jsonschema-rs is_valid (dict)", rust.is_valid, items, args.rounds)
    print(f"{'jsonschema-rs is faster by':44s} {fast_us / rust_us:9.1f} x")
    timed("json.loads alone (bytes)", json.loads, raw, args.rounds)
    timed(
        "json.loads + jsonschema-rs (bytes)",
        lambda b: rust.is_valid(json.loads(b)),
        raw,
        args.rounds,
    )
    try:
        import jsonschema

        slow = jsonschema.Draft4Validator(schema)
        timed(
            "jsonschema, pure Python (dict)", slow.is_valid, items[: max(50, len(items) // 10)], 1
        )
    except ImportError:
        print("jsonschema not installed: pure-Python reference skipped")

    import django

    django.setup()
    from messaging.validation import ValidationContext, validate_batch, validate_message
    from messaging.validation.registry import SchemaRegistry

    registry = SchemaRegistry.from_spec(spec, name=spec.api_version)
    context = ValidationContext(dip_ids=frozenset({"1000000001"}), role="SUP", environment="UIT")
    outcome = validate_message(raw[0], context=context, registry=registry)
    assert outcome.ok, outcome.findings
    timed(
        "busbar syntactic only (bytes)",
        lambda b: validate_message(b, context=context, registry=registry, stages=("syntactic",)),
        raw,
        args.rounds,
    )
    timed(
        "busbar all stages (bytes)",
        lambda b: validate_message(b, context=context, registry=registry),
        raw,
        args.rounds,
    )
    # Batches of 100, as a DIP delivery brings them (one history look-up per batch).
    batches = [raw[i : i + 100] for i in range(0, len(raw), 100)]
    timed(
        "busbar validate_batch of 100, all stages",
        lambda batch: validate_batch(batch, context=context, registry=registry),
        batches,
        args.rounds,
        per=100,
    )


if __name__ == "__main__":
    main()
