"""Faults on demand: rules that make dipsim misbehave for a channel, a DIP ID, or everything.

A rule is a JSON object, stored in the database so that it survives a restart::

    {"kind": "error", "direction": "ingress", "channel": "IF-021", "dip_id": "1000000001",
     "probability": 1.0, "remaining": 3, "until": 1767225600.0, "params": {"status": 503}}

``direction`` is ``ingress`` (requests participants send to dipsim; ``dip_id`` matches the caller)
or ``egress`` (pushes dipsim makes to webhooks; ``dip_id`` matches the recipient). ``channel``,
``dip_id``, ``remaining`` (number of times it fires) and ``until`` (epoch seconds) are optional.
"""

from __future__ import annotations

import builtins
import random
import time
from dataclasses import dataclass
from typing import Any

from dipsim.store import Store

INGRESS_KINDS = {
    "latency": "delay the answer by params.ms milliseconds",
    "error": "answer params.status (default 500) without processing; a 429 or 503 carries "
    "Retry-After: params.retry_after seconds (default the retry_after_seconds setting)",
    "timeout": "hold the request params.seconds (default 60) then close the connection without an answer, unprocessed",
    "drop_after_accept": "accept and store the batch, then close the connection without an answer",
    "too_large": "answer 413 Payload Too Large",
    "rate_limit": "answer 429 Too Many Requests with Retry-After: params.retry_after seconds",
    "outage": "answer 503 (Retry-After: the time left, when the rule has an end) on the API and "
    "stop all pushes while active",
}
EGRESS_KINDS = {
    "latency": "wait params.ms milliseconds before each push",
    "duplicate": "push the same batch twice",
    "out_of_order": "push a batch's messages in reverse order (holds params.hold (default 2) messages back)",
    "malformed": "push a truncated, unparseable JSON body (correctly signed)",
    "bad_signature": "push with a corrupted X-DIP-Signature",
    "expired_signature": "push signed with an expired DIP signing certificate",
    "drop": "lose the push before it is sent (counts as a network failure, so it is retried)",
    "outage": "stop all pushes while active",
}
KINDS = {"ingress": INGRESS_KINDS, "egress": EGRESS_KINDS}


class FaultError(ValueError):
    """A fault rule is malformed."""


def check_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """Validate and normalise a rule; raise :class:`FaultError` when it is not usable."""
    if not isinstance(rule, dict):
        raise FaultError("a fault is a JSON object")
    direction = rule.get("direction", "ingress")
    kind = rule.get("kind")
    if direction not in KINDS:
        raise FaultError("direction is 'ingress' or 'egress'")
    if kind not in KINDS[direction]:
        raise FaultError(f"kind must be one of {sorted(KINDS[direction])} for {direction}")
    out: dict[str, Any] = {"kind": kind, "direction": direction}
    if rule.get("channel"):
        out["channel"] = str(rule["channel"]).upper()
    if rule.get("dip_id"):
        out["dip_id"] = str(rule["dip_id"])
    probability = float(rule.get("probability", 1.0))
    if not 0.0 <= probability <= 1.0:
        raise FaultError("probability is between 0 and 1")
    out["probability"] = probability
    if rule.get("remaining") is not None:
        out["remaining"] = int(rule["remaining"])
    if rule.get("duration") is not None:
        out["until"] = time.time() + float(rule["duration"])
    elif rule.get("until") is not None:
        out["until"] = float(rule["until"])
    params = rule.get("params") or {}
    if not isinstance(params, dict):
        raise FaultError("params is an object")
    out["params"] = params
    return out


@dataclass
class Fault:
    id: int
    rule: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.rule["kind"])

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.rule.get("params") or {})


class FaultSet:
    """The active rules, mirrored in memory for speed and in the database for restarts."""

    def __init__(self, store: Store, rng: random.Random | None = None) -> None:
        self.store = store
        self.rng = rng or random.Random()
        self._faults: dict[int, dict[str, Any]] = dict(store.faults())

    def add(self, rule: dict[str, Any]) -> Fault:
        rule = check_rule(rule)
        fault_id = self.store.add_fault(rule)
        self._faults[fault_id] = rule
        return Fault(fault_id, rule)

    def remove(self, fault_id: int | None = None) -> int:
        removed = self.store.delete_fault(fault_id)
        if fault_id is None:
            self._faults.clear()
        else:
            self._faults.pop(fault_id, None)
        return removed

    def list(self) -> list[dict[str, Any]]:
        self._expire()
        return [{"id": fault_id, **rule} for fault_id, rule in sorted(self._faults.items())]

    def _expire(self) -> None:
        now = time.time()
        for fault_id, rule in list(self._faults.items()):
            if rule.get("until") is not None and rule["until"] < now:
                self.remove(fault_id)

    def outage_left(self) -> float | None:
        """Seconds until the last active outage with an end ends (None when none has an end)."""
        ends = [
            rule["until"]
            for rule in self._faults.values()
            if rule["kind"] == "outage" and rule.get("until") is not None
        ]
        return max(0.0, max(ends) - time.time()) if ends else None

    def outage(self) -> bool:
        """True while an outage rule (either direction, any scope) is active. Does not consume it."""
        if not self._faults:
            return False
        self._expire()
        return any(rule["kind"] == "outage" for rule in self._faults.values())

    # builtins.list: inside this class, plain ``list`` names the method above.
    def pick(self, direction: str, channel: str | None, dip_id: str | None) -> builtins.list[Fault]:
        """Return the rules that fire for this request or push, consuming their ``remaining`` counts."""
        if not self._faults:
            return []
        self._expire()
        fired: builtins.list[Fault] = []
        for fault_id, rule in list(self._faults.items()):
            if rule["direction"] != direction:
                continue
            if rule.get("channel") and channel and rule["channel"] != channel.upper():
                continue
            if rule.get("channel") and not channel:
                continue
            if rule.get("dip_id") and rule["dip_id"] != dip_id:
                continue
            if rule["probability"] < 1.0 and self.rng.random() >= rule["probability"]:
                continue
            fired.append(Fault(fault_id, rule))
            if rule.get("remaining") is not None:
                rule["remaining"] -= 1
                if rule["remaining"] <= 0:
                    self.remove(fault_id)
                else:
                    self.store.update_fault(fault_id, rule)
        return fired
