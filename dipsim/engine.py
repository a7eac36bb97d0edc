"""The DIP's behaviour, independent of HTTP: L1 validation, envelope rules, routing, status messages,
replay and requeue. :mod:`dipsim.server` wraps it in the HTTPS API; the traffic generator and the
simulated counterparties call it directly for messages that originate inside dipsim.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dipsim import codes
from dipsim.config import Settings, role_matches
from dipsim.faults import FaultSet
from dipsim.schemas import SUR_PATTERN
from dipsim.store import Participant, Registry, Store
from dipsim.validation import (
    Failure,
    Validators,
    _get_ci,
    dip_timestamp,
    mpan_check_digit_ok,
    parse_timestamp,
)

logger = logging.getLogger("dipsim")

SUR_RE = re.compile(SUR_PATTERN)
STATUS_CHANNEL = "STATUS"

# Message channels of DT-000 (SubmitEvents v2.1.0), so that a channel the loaded schemas do not
# cover still answers 400 (schema failure) rather than 404 (no such channel).
CHANNELS = frozenset(
    [
        f"IF-{n:03d}"
        for n in (
            1,
            2,
            3,
            4,
            5,
            6,
            7,
            8,
            9,
            13,
            14,
            15,
            16,
            18,
            19,
            20,
            21,
            22,
            23,
            24,
            25,
            26,
            27,
            28,
        )
    ]
    + [f"IF-{n:03d}" for n in (31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 43, 44, 45, 47, 50, 51)]
    + [f"IF-{n:03d}" for n in (61, 62, 63, 64, 65)]
    + ["REP-002", "REP-002A", "REP-002B", "REP-003", "REP-003A", "REP-004", "REP-006", "REP-007"]
    + ["REP-008", "REP-009", "REP-900", "REP-901"]
)


def publication_id(channel: str) -> str:
    """IF-0xx reaches recipients as PUB-0xx; reports keep their REP id."""
    return "PUB-" + channel[3:] if channel.startswith("IF-") else channel


def _valid_dip_id(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) == 10 else None


@dataclass
class Outcome:
    """The answer to a send: HTTP status and the StandardResponse body; accepted rows if 201."""

    status: int
    body: dict[str, Any]
    accepted: list[dict[str, Any]] = field(default_factory=list)


class Simulator:
    """One DIP instance: its settings, state, validators, faults, counters and delivery trigger."""

    def __init__(
        self, settings: Settings, store: Store | None = None, validators: Validators | None = None
    ) -> None:
        self.settings = settings
        self.store = store or Store(settings.data_dir)
        # Validators are shareable between instances (tests start many), compiled once each.
        self.validators = validators or Validators(settings.spec_dir)
        self.faults = FaultSet(self.store)
        self.counters: Counter[str] = Counter(self.store.load_counters())
        self._flushed: dict[str, int] = dict(self.counters)
        self.started_at = time.time()
        self.wake = asyncio.Event()
        # Targets (recipient, channel) that may have pending deliveries. Kept in memory so the
        # pusher never scans the whole backlog to find work; rebuilt from the database at start.
        self.pending_targets: set[tuple[str, str]] = self.store.pending_targets()
        # Called with (recipient Participant, kind, list of item dicts) for simulated recipients.
        self.counterparty: Callable[[Participant, str, list[dict[str, Any]]], None] | None = None
        for interface_id, roles in settings.secondary_roles.items():
            if interface_id not in self.store.registry().secondary_roles:
                self.store.set_route(interface_id, "secondary", roles)

    # ---- helpers ---------------------------------------------------------------------------------

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def flush_counters(self) -> None:
        """Persist the counters that changed since the last flush (an idle dipsim writes nothing)."""
        changed = {k: v for k, v in self.counters.items() if self._flushed.get(k) != v}
        if changed:
            self.store.save_counters(changed)
            self._flushed.update(changed)

    def registry(self) -> Registry:
        return self.store.registry()

    @staticmethod
    def may_act_for(caller: Participant | None, dip_id: str, registry: Registry) -> bool:
        """True when ``caller`` (whose API key was used) may act for ``dip_id``: itself or as its DCP."""
        if caller is None:
            return True
        if caller.dip_id == dip_id:
            return True
        target = registry.participants.get(dip_id)
        return target is not None and target.dcp_id is not None and target.dcp_id == caller.dip_id

    def response_entry(
        self,
        *,
        code: str,
        txn: str | None = None,
        sur: Any = None,
        correlation: Any = None,
        sent_timestamp: Any = None,
        recipient_id: Any = None,
        dcp_id: Any = None,
        help_text: str | None = None,
    ) -> dict[str, Any]:
        """One ``StandardResponseBodyType``: all ten fields present, values only when schema-valid."""
        return {
            "transactionID": txn,
            "senderUniqueReference": sur
            if isinstance(sur, str) and len(sur) <= 200 and SUR_RE.match(sur)
            else None,
            "correlationID": correlation
            if isinstance(correlation, str) and 1 <= len(correlation) <= 60
            else None,
            "sentTimestamp": sent_timestamp if parse_timestamp(sent_timestamp) else dip_timestamp(),
            "senderID": self.settings.dip_id,
            "recipientID": _valid_dip_id(recipient_id),
            "DIPConnectionProviderID": _valid_dip_id(dcp_id),
            "message": codes.message(code),
            "help": help_text[:500] if help_text else None,
            "serviceTicketURL": None,
        }

    def standard_response(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        return {"messageArray": entries, "timestamp": dip_timestamp()}

    def request_failure(self, code: str, detail: str) -> Outcome:
        """A 400 for a request that is not a usable batch at all (not JSON, not an array...)."""
        self.count("ingress.rejected_requests")
        return Outcome(
            400, self.standard_response([self.response_entry(code=code, help_text=detail)])
        )

    # ---- send -----------------------------------------------------------------------------------

    def ingest(
        self, channel: str, items: Any, caller: Participant | None, now: float | None = None
    ) -> Outcome:
        """Run L1 validation and the envelope rules on a batch; store and route it if all pass.

        All or nothing, as the DIP: one failing message rejects the whole batch with 400 and one
        entry per failing message; otherwise 201 with one entry (and a new transaction id) per
        message. ``caller`` is the participant whose API key was used, or None for messages that
        originate inside dipsim (counterparties, traffic), which skip the credential checks.
        """
        now = now or time.time()
        if not isinstance(items, list) or not items:
            return self.request_failure(
                "MSG1001", "the body must be a non-empty JSON array of messages"
            )
        registry = self.registry()
        settings = self.settings
        failures: list[dict[str, Any]] = []
        prepared: list[dict[str, Any]] = []
        batch_surs: set[str] = set()
        now_dt = dt.datetime.fromtimestamp(now, dt.UTC)
        future_limit = now_dt + dt.timedelta(seconds=settings.future_tolerance_seconds)

        candidate_surs: list[str] = []
        for item in items:
            s1 = _get_ci(
                _get_ci(_get_ci(_get_ci(item, "payload"), "CommonBlock"), "S1"),
                "senderUniqueReference",
            )
            if isinstance(s1, str):
                candidate_surs.append(s1)
        known_surs = self.store.sur_exists(candidate_surs)

        for index, item in enumerate(items):
            raw_payload = _get_ci(item, "payload") if isinstance(item, dict) else None
            failure: Failure | None
            if raw_payload is None or not isinstance(item, dict) or len(item) != 1:
                payload, failure = (
                    raw_payload,
                    Failure("MSG1001", "each message is an object with one key, payload"),
                )
            else:
                payload, failure = self.validators.validate_payload(channel, raw_payload)
            common = _get_ci(payload, "CommonBlock") or {}
            s1 = _get_ci(common, "S1") or {}
            s0 = _get_ci(common, "S0") or {}
            sender_id = _get_ci(s1, "senderDIPID")
            sur = _get_ci(s1, "senderUniqueReference")
            sender_ts = _get_ci(s1, "senderTimestamp")
            dcp_id = _get_ci(s1, "DIPConnectionProviderID")
            route: tuple[list[str], list[str], list[str]] | None = None
            if failure is None:
                assert isinstance(payload, dict)  # validated: an object
                failure, route = self._envelope(
                    channel, payload, caller, registry, now_dt, future_limit, known_surs, batch_surs
                )
            if failure is not None:
                failures.append(
                    self.response_entry(
                        code=failure.code,
                        sur=sur,
                        correlation=_get_ci(s1, "senderCorrelationID"),
                        sent_timestamp=sender_ts,
                        recipient_id=sender_id,
                        dcp_id=dcp_id,
                        help_text=f"message {index}: {failure.detail}",
                    )
                )
                continue
            assert route is not None
            batch_surs.add(sur)
            prepared.append(
                {
                    "payload": payload,
                    "s0": s0,
                    "s1": s1,
                    "route": route,
                    "sender": sender_id,
                    "role": s1["senderRoleID"],
                    "sur": sur,
                }
            )
        if failures:
            self.count("ingress.rejected_batches")
            self.count("ingress.rejected_messages", len(failures))
            for entry in failures:
                self.count("reject." + entry["message"].split(" ", 1)[0])
            return Outcome(400, self.standard_response(failures))
        accepted = self._accept(channel, prepared, now)
        entries = [
            self.response_entry(
                code="MSG0000",
                txn=row["txn"],
                sur=row["sur"],
                correlation=row["correlation"],
                sent_timestamp=row["sender_timestamp"],
                recipient_id=row["sender"],
                dcp_id=row["dcp"],
            )
            for row in accepted
        ]
        return Outcome(201, self.standard_response(entries), accepted)

    def _envelope(
        self,
        channel: str,
        payload: dict[str, Any],
        caller: Participant | None,
        registry: Registry,
        now_dt: dt.datetime,
        future_limit: dt.datetime,
        known_surs: set[str],
        batch_surs: set[str],
    ) -> tuple[Failure | None, tuple[list[str], list[str], list[str]] | None]:
        """Envelope rules after the schema passed. Returns (failure, None) or (None, route)."""
        common = payload["CommonBlock"]
        s1 = common["S1"]
        settings = self.settings
        if s1["environmentTag"] != settings.env:
            # The DIP has no MSG code of its own for a message tagged for another environment;
            # it is treated as an addressing error (a message sent to the wrong DIP).
            return Failure(
                "MSG1030", f"environmentTag {s1['environmentTag']} sent to the {settings.env} DIP"
            ), None
        sent = parse_timestamp(s1["senderTimestamp"])
        if sent is None:
            return Failure("MSG1007", "senderTimestamp is not YYYY-MM-DDThh:mm:ss+hh:mm"), None
        if sent > future_limit:
            return Failure("MSG1007", "senderTimestamp is in the future"), None
        sender_id = s1["senderDIPID"]
        sender = registry.participants.get(sender_id)
        if sender is None or sender.kind == "dcp":
            return Failure("MSG1009", f"sender DIP ID {sender_id} is not registered"), None
        if sender.env != settings.env:
            return Failure(
                "MSG1009", f"sender DIP ID {sender_id} is not registered in {settings.env}"
            ), None
        if not self.may_act_for(caller, sender_id, registry):
            return Failure("MSG1009", f"the credentials used may not send for {sender_id}"), None
        if s1["senderRoleID"] != sender.role:
            return Failure(
                "MSG1010", f"{sender_id} is registered as {sender.role}, not {s1['senderRoleID']}"
            ), None
        dcp_id = s1.get("DIPConnectionProviderID")
        if dcp_id is not None:
            dcp = registry.participants.get(dcp_id)
            if dcp is None or dcp.kind != "dcp" or sender.dcp_id != dcp_id:
                return Failure(
                    "MSG1011", f"{dcp_id} is not the registered connection provider of {sender_id}"
                ), None
        elif caller is not None and caller.kind == "dcp":
            return Failure(
                "MSG1011", "a connection provider must name itself in DIPConnectionProviderID"
            ), None
        sur = s1["senderUniqueReference"]
        if sur in known_surs or sur in batch_surs:
            return Failure("MSG1006", f"senderUniqueReference {sur} was already used"), None

        a0 = common.get("A0") or {}
        receivers = settings.recipient_roles.get(channel)
        primary = [r for r in (a0.get("primaryRecipients") or []) if r is not None]
        for recipient in primary:
            found = registry.participants.get(recipient)
            if found is None or found.kind == "dcp":
                return Failure("MSG1031", f"primary recipient {recipient} is not registered"), None
            if receivers is not None and found.role not in receivers:
                return Failure(
                    "MSG1032",
                    f"primary recipient {recipient} is a {found.role}; {channel} goes to "
                    f"{', '.join(receivers)}",
                ), None
        always = [r for r in registry.always.get(channel, []) if r != sender_id]
        for recipient in always:
            found = registry.participants.get(recipient)
            if found is None:
                return Failure(
                    "MSG1035", f"always recipient {recipient} of {channel} is not registered"
                ), None
            if receivers is not None and found.role not in receivers:
                return Failure(
                    "MSG1036",
                    f"always recipient {recipient} of {channel} is a {found.role}; {channel} "
                    f"goes to {', '.join(receivers)}",
                ), None
        secondary: list[str] = []
        roles = registry.secondary_roles.get(channel)
        if roles:
            m0 = common.get("M0")
            mpan = m0.get("MPANCore") if isinstance(m0, dict) else None
            if not mpan:
                if not primary and not always:
                    return Failure("MSG1037", "no MPAN to resolve secondary recipients"), None
            else:
                if settings.check_mpan_digit and not mpan_check_digit_ok(mpan):
                    return Failure("MSG1038", f"MPAN {mpan} fails its check digit"), None
                entry = self.store.mpan(mpan)
                if entry is None:
                    if settings.strict_mpan_routing:
                        return Failure("MSG1038", f"MPAN {mpan} is not in the registry"), None
                else:
                    for role in roles:
                        party = entry["parties"].get(role)
                        if role == "LDSO" and not party:
                            party = entry["distributor"]
                        if party and party != sender_id and party not in secondary:
                            found = registry.participants.get(party)
                            if found is None:
                                return Failure(
                                    "MSG1033", f"secondary recipient {party} is not registered"
                                ), None
                            if not role_matches(found.role, role):
                                return Failure(
                                    "MSG1034",
                                    f"secondary recipient {party} is appointed to MPAN {mpan} as "
                                    f"{role} but registered as {found.role}",
                                ), None
                            secondary.append(party)
        everyone = {*primary, *secondary, *always} - {sender_id}
        if not everyone:
            return Failure("MSG1030", "the message has no recipient"), None
        return None, (primary, secondary, always)

    def _accept(
        self, channel: str, prepared: list[dict[str, Any]], now: float
    ) -> list[dict[str, Any]]:
        """Fill D0 and A0, store the messages and their deliveries, count, and wake the pusher."""
        stamp = dip_timestamp(dt.datetime.fromtimestamp(now, dt.UTC))
        day = stamp[:10].replace("-", "")
        pub = publication_id(channel)
        registry = self.registry()
        rows: list[dict[str, Any]] = []
        delivery_state: dict[tuple[str, str], str] = {}
        for item in prepared:
            primary, secondary, always = item["route"]
            sender = item["sender"]
            txn = f"T-{channel}-{sender}-{item['role']}-{day}-{secrets.token_hex(8).upper()}"
            s1 = item["s1"]
            common_in: dict[str, Any] = item["payload"]["CommonBlock"]
            common_out: dict[str, Any] = {}
            for key, value in common_in.items():
                if key in {"A0", "D0"}:
                    continue
                common_out[key] = value
            a0 = {"primaryRecipients": primary, "secondaryRecipients": secondary, "always": always}
            d0 = {
                "transactionID": txn,
                "transactionTimestamp": stamp,
                "publicationID": pub,
                "initialCorrelationID": s1.get("senderCorrelationID"),
                "replayIndicator": False,
                "serviceTicketURL": None,
            }
            ordered: dict[str, Any] = {}
            for key, value in common_out.items():
                ordered[key] = value
                if key == ("S2" if "S2" in common_out else "S1"):
                    ordered["A0"] = a0
                    ordered["D0"] = d0
            payload = {"CommonBlock": ordered}
            for key, value in item["payload"].items():
                if key != "CommonBlock":
                    payload[key] = value
            recipients = [r for r in dict.fromkeys([*primary, *secondary, *always]) if r != sender]
            for recipient in recipients:
                if (recipient, channel) not in delivery_state:
                    target = registry.participants.get(recipient)
                    simulated = target is not None and target.simulated
                    has_hook = simulated or self.store.webhook(channel, recipient) is not None
                    delivery_state[(recipient, channel)] = "pending" if has_hook else "waiting"
            m0 = ordered.get("M0")
            rows.append(
                {
                    "txn": txn,
                    "channel": channel,
                    "event_code": item["s0"].get("eventCode"),
                    "schema_version": item["s0"].get("schemaVersion"),
                    "sender": sender,
                    "sur": item["sur"],
                    "mpan": m0.get("MPANCore") if isinstance(m0, dict) else None,
                    "correlation": s1.get("senderCorrelationID"),
                    "sender_timestamp": s1.get("senderTimestamp"),
                    "dcp": s1.get("DIPConnectionProviderID"),
                    "received_at": now,
                    "recipients": recipients,
                    "body": json.dumps(payload, separators=(",", ":")).encode(),
                    "payload": payload,
                }
            )
        self.store.insert_messages(rows, delivery_state)
        self.pending_targets.update(t for t, state in delivery_state.items() if state == "pending")
        self.count("ingress.accepted_batches")
        self.count("ingress.accepted_messages", len(rows))
        self.count(f"accepted.{channel}", len(rows))
        self.wake.set()
        return rows

    # ---- status channel -------------------------------------------------------------------------

    def submit_status(self, items: Any, caller: Participant | None) -> Outcome:
        """Accept status messages (RCP codes) and forward each to the original sender's status webhook."""
        if not isinstance(items, list) or not items:
            return self.request_failure(
                "MSG1001", "the body must be a non-empty JSON array of status messages"
            )
        registry = self.registry()
        failures: list[dict[str, Any]] = []
        rows: list[tuple[str, str, str | None, str]] = []
        required = (
            "transactionID",
            "senderUniqueReference",
            "correlationID",
            "sentTimestamp",
            "senderID",
            "recipientID",
            "DIPConnectionProviderID",
            "message",
            "help",
            "serviceTicketURL",
        )
        for index, raw in enumerate(items):
            if not isinstance(raw, dict):
                failures.append(
                    self.response_entry(code="MSG1001", help_text=f"status {index}: not an object")
                )
                continue
            lower = {k.lower(): k for k in required}
            entry = {lower.get(k.lower(), k): v for k, v in raw.items()}
            missing = [k for k in required if k not in entry]
            unknown = [k for k in entry if k not in required]
            txn = entry.get("transactionID")
            if missing or unknown:
                failures.append(
                    self.response_entry(
                        code="MSG1001",
                        txn=txn if isinstance(txn, str) else None,
                        help_text=f"status {index}: missing {missing} unknown {unknown}",
                    )
                )
                continue
            sender_id = entry["senderID"]
            if not isinstance(sender_id, str) or not self.may_act_for(caller, sender_id, registry):
                failures.append(
                    self.response_entry(
                        code="MSG1009", txn=txn, help_text=f"status {index}: senderID is not yours"
                    )
                )
                continue
            target = entry["recipientID"]
            if target is None and isinstance(txn, str):
                original = self.store.message_by_txn(txn)
                target = original["sender"] if original is not None else None
            if not isinstance(target, str) or target not in registry.participants:
                failures.append(
                    self.response_entry(
                        code="MSG1030", txn=txn, help_text=f"status {index}: unknown recipient"
                    )
                )
                continue
            rows.append(
                (
                    sender_id,
                    target,
                    txn if isinstance(txn, str) else None,
                    json.dumps(entry, separators=(",", ":")),
                )
            )
        if failures:
            self.count("status.rejected", len(failures))
            return Outcome(400, self.standard_response(failures))
        self.forward_status(rows)
        entries = [
            self.response_entry(code="MSG0000", txn=txn, recipient_id=from_id)
            for from_id, _to, txn, _body in rows
        ]
        return Outcome(201, self.standard_response(entries))

    def forward_status(self, rows: list[tuple[str, str, str | None, str]]) -> None:
        """Store status messages ``(from, to, transaction id, body JSON)`` and queue their delivery."""
        ids = self.store.insert_status(rows)
        registry = self.registry()
        deliveries = []
        hooked_by_target: dict[str, bool] = {}
        for status_id, (_from, to_id, _txn, _body) in zip(ids, rows, strict=True):
            hooked = hooked_by_target.get(to_id)
            if hooked is None:
                target = registry.participants.get(to_id)
                hooked = bool(target is not None and target.simulated) or (
                    self.store.webhook(STATUS_CHANNEL, to_id) is not None
                )
                hooked_by_target[to_id] = hooked
            deliveries.append(
                ("status", status_id, to_id, STATUS_CHANNEL, "pending" if hooked else "waiting", 0)
            )
        self.store.add_deliveries(deliveries)
        self.pending_targets.update((d[2], STATUS_CHANNEL) for d in deliveries if d[4] == "pending")
        self.count("status.received", len(rows))
        self.wake.set()

    # ---- replay / requeue -----------------------------------------------------------------------

    def select_for_replay(self, channel: str, recipient: str, request: dict[str, Any]) -> list[Any]:
        """Messages of ``channel`` addressed to ``recipient`` that match a MessageRequest.

        Raises ``ValueError`` with a reason when the request is malformed.
        """
        lower = {k.lower(): v for k, v in request.items()} if isinstance(request, dict) else None
        if lower is None:
            raise ValueError("the body is a MessageRequest object")
        missing = [
            k
            for k in ("datetimefrom", "datetimeto", "eventcode", "mpan", "version")
            if k not in lower
        ]
        if missing:
            raise ValueError(f"MessageRequest lacks {missing}")
        since = until = None
        if lower["datetimefrom"] is not None:
            parsed = parse_timestamp(lower["datetimefrom"])
            if parsed is None:
                raise ValueError("datetimeFrom is not a 25-character timestamp")
            since = parsed.timestamp()
        if lower["datetimeto"] is not None:
            parsed = parse_timestamp(lower["datetimeto"])
            if parsed is None:
                raise ValueError("datetimeTo is not a 25-character timestamp")
            until = parsed.timestamp()
        event = lower["eventcode"]
        if isinstance(event, str) and event and not event.startswith("["):
            event = f"[{event}]"
        txns = lower.get("transactionids")
        if txns is not None and (not isinstance(txns, list) or not 1 <= len(txns) <= 100):
            raise ValueError("transactionIDs holds 1 to 100 transaction ids")
        return self.store.find_messages(
            channel=channel,
            recipient=recipient,
            since=since,
            until=until,
            event_code=event or None,
            mpan=lower["mpan"] or None,
            version=lower["version"] or None,
            txns=txns,
            limit=self.settings.replay_limit,
        )

    def requeue(self, channel: str, recipient: str, rows: list[Any]) -> int:
        target = self.registry().participants.get(recipient)
        hooked = (target is not None and target.simulated) or self.store.webhook(
            channel, recipient
        ) is not None
        state = "pending" if hooked else "waiting"
        self.store.add_deliveries(
            ("message", row["seq"], recipient, channel, state, 1) for row in rows
        )
        if state == "pending":
            self.pending_targets.add((recipient, channel))
        self.count("requeue.messages", len(rows))
        self.wake.set()
        return len(rows)


def mark_replayed(body: bytes) -> bytes:
    """Return an egress payload with ``D0.replayIndicator`` set, as the DIP marks replays."""
    payload = json.loads(body)
    d0 = payload.get("CommonBlock", {}).get("D0")
    if isinstance(d0, dict):
        d0["replayIndicator"] = True
    return json.dumps(payload, separators=(",", ":")).encode()
