"""Simulated market participants that answer as the market would.

A participant registered with ``--simulated BEHAVIOUR`` receives its messages inside dipsim
instead of over a webhook, and reacts through the same L1 pipeline as any sender:

- ``regs``: the Registration Service. IF-031 (appointment request) -> IF-032 initial response to
  the supplier, then IF-033 to the proposed service provider; IF-034 from the provider ->
  IF-035 accepted/rejected to supplier and provider and, when accepted, IF-036 to both.
  A request naming an unknown provider is rejected at once (IF-035 ``R`` with a REG code).
- ``sp``: a service provider (MS or DS). IF-033 -> IF-034 accepting (``SP000``) or rejecting.
- ``ack``: any other recipient; it only sends status messages back.

Every simulated recipient also sends a status message (RCP code) for each message it receives
to the message's original sender, as recipients do on the DIP's status channel.

Behaviour is tuned by the ``counterparties`` setting (admin API ``PUT /admin/counterparties``)::

    {"accept_share": 0.9, "delay_seconds": 1.0, "reject_code": "SP001",
     "status_share": 1.0, "status_error_share": 0.0, "status_error_code": "RCP1061"}
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Any

from dipsim import messages
from dipsim.codes import message as code_message
from dipsim.engine import Simulator
from dipsim.store import Participant
from dipsim.validation import dip_timestamp

logger = logging.getLogger("dipsim.counterparties")

DEFAULTS: dict[str, Any] = {
    "accept_share": 0.9,
    "delay_seconds": 1.0,
    "reject_code": "SP001",
    "status_share": 1.0,
    "status_error_share": 0.0,
    "status_error_code": "RCP1061",
}


class Counterparties:
    """Reacts to messages delivered to simulated participants (installed as ``sim.counterparty``)."""

    def __init__(self, sim: Simulator, rng: random.Random | None = None) -> None:
        self.sim = sim
        self.rng = rng or random.Random()
        self.handles: set[asyncio.TimerHandle] = set()
        sim.counterparty = self.receive

    def config(self) -> dict[str, Any]:
        return {**DEFAULTS, **(self.sim.store.get_setting("counterparties", {}) or {})}

    async def stop(self) -> None:
        for handle in list(self.handles):
            handle.cancel()
        self.handles.clear()

    def _later(self, delay: float, func: Any, *args: Any) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def run() -> None:
            if handle is not None:
                self.handles.discard(handle)
            try:
                func(*args)
            except Exception:
                logger.exception("counterparty.failed")

        handle = loop.call_later(max(0.0, delay), run)
        self.handles.add(handle)

    def _delay(self, config: dict[str, Any]) -> float:
        base = float(config["delay_seconds"])
        return base * self.rng.uniform(0.5, 1.5) if base > 0 else 0.0

    def receive(self, participant: Participant, kind: str, items: list[dict[str, Any]]) -> None:
        """Entry point from the pusher: ``items`` are egress messages (or status entries)."""
        if kind != "message":
            self.sim.count("counterparty.status_received", len(items))
            return
        config = self.config()
        statuses: list[tuple[str, str, str | None, str]] = []
        for item in items:
            payload = item.get("payload") or {}
            status = self._status(participant, payload, config)
            if status is not None:
                statuses.append(status)
            channel = payload.get("CommonBlock", {}).get("S0", {}).get("interfaceID")
            if participant.simulated == "regs" and channel == "IF-031":
                self._later(self._delay(config), self._regs_on_031, participant, payload)
            elif participant.simulated == "regs" and channel == "IF-034":
                self._later(self._delay(config), self._regs_on_034, participant, payload)
            elif participant.simulated == "sp" and channel == "IF-033":
                self._later(self._delay(config), self._sp_on_033, participant, payload, config)
        if statuses:
            # One transaction for the whole batch: simulated recipients can see thousands a second.
            self.sim.forward_status(statuses)

    # ---- status messages ----------------------------------------------------------------------

    def _status(
        self, participant: Participant, payload: dict[str, Any], config: dict[str, Any]
    ) -> tuple[str, str, str | None, str] | None:
        """The status message ``participant`` sends back for ``payload``, or None for none."""
        if self.rng.random() >= float(config["status_share"]):
            return None
        common = payload.get("CommonBlock", {})
        s1, d0 = common.get("S1", {}), common.get("D0", {})
        sender = s1.get("senderDIPID")
        if sender not in self.sim.registry().participants:
            return None
        error = self.rng.random() < float(config["status_error_share"])
        entry = {
            "transactionID": d0.get("transactionID"),
            "senderUniqueReference": s1.get("senderUniqueReference"),
            "correlationID": s1.get("senderCorrelationID"),
            "sentTimestamp": dip_timestamp(),
            "senderID": participant.dip_id,
            "recipientID": sender,
            "DIPConnectionProviderID": s1.get("DIPConnectionProviderID"),
            "message": code_message(config["status_error_code"] if error else "RCP0000"),
            "help": None,
            "serviceTicketURL": None,
        }
        return (
            participant.dip_id,
            sender,
            d0.get("transactionID"),
            json.dumps(entry, separators=(",", ":")),
        )

    # ---- registration service -----------------------------------------------------------------

    def _chain_arguments(self, regs: Any, facts: dict[str, Any], supplier: Any) -> dict[str, Any]:
        """What every message of one appointment chain repeats (messages.appointment's keywords)."""
        return {
            "service": facts["service"],
            "sender": regs.dip_id,
            "role": regs.role,
            "mpan": facts["mpan"],
            "supplier": supplier,
            "provider": facts["provider"],
            "effective": facts["effective"],
            "env": self.sim.settings.env,
            "correlation": facts["correlation"],
            "distributor": facts["distributor"],
            "registration_id": facts["registration_id"],
        }

    def _send(self, channel: str, payload: dict[str, Any]) -> None:
        outcome = self.sim.ingest(channel, [{"payload": payload}], None)
        self.sim.count(
            f"counterparty.sent.{channel}" if outcome.status == 201 else "counterparty.rejected"
        )
        if outcome.status != 201:
            logger.warning("counterparty.rejected %s", json.dumps(outcome.body)[:500])

    def _appointment_facts(self, payload: dict[str, Any]) -> dict[str, Any]:
        common, custom = payload["CommonBlock"], payload.get("CustomBlock", {})
        event = common["S0"]["eventCode"]
        service = "MS" if event.startswith("[MS") else "DS"
        block = custom.get("B070") if service == "MS" else custom.get("B071")
        if service == "MS":
            provider = (block["proposedMeteringServiceDIPID"], block["proposedMeteringServiceMPID"])
            effective = block["proposedMeteringServiceDIPEffectiveFromDate"]
        else:
            provider = (block["proposedDataServiceDIPID"], block["proposedDataServiceMPID"])
            effective = block["proposedDataServiceDIPEffectiveFromDate"]
        m0 = common.get("M0", {})
        return {
            "service": service,
            "provider": provider,
            "effective": effective,
            "mpan": m0.get("MPANCore"),
            "distributor": m0.get("distributorDIPID"),
            "correlation": common["S1"].get("senderCorrelationID"),
            "registration_id": custom.get("B013", {}).get(
                "CSSRegistrationID", "c0ffee00-0000-4000-8000-000000000001"
            ),
        }

    def _regs_on_031(self, regs: Participant, payload: dict[str, Any]) -> None:
        facts = self._appointment_facts(payload)
        s1 = payload["CommonBlock"]["S1"]
        registry = self.sim.registry()
        supplier_participant = registry.participants.get(s1["senderDIPID"])
        if supplier_participant is None:
            return
        supplier = (supplier_participant.dip_id, supplier_participant.mpid)
        common = self._chain_arguments(regs, facts, supplier)
        self._send("IF-032", messages.appointment("IF-032", recipients=[supplier[0]], **common))
        if facts["provider"][0] not in registry.participants:
            self._send(
                "IF-035",
                messages.appointment(
                    "IF-035",
                    recipients=[supplier[0]],
                    event=f"[{facts['service']}AppRejected]",
                    response=("R", "REG1031"),
                    **common,
                ),
            )
            return
        self._send(
            "IF-033", messages.appointment("IF-033", recipients=[facts["provider"][0]], **common)
        )

    def _regs_on_034(self, regs: Participant, payload: dict[str, Any]) -> None:
        facts = self._appointment_facts(payload)
        custom = payload.get("CustomBlock", {})
        b012 = custom.get("B012", {})
        supplier = (
            b012.get("serviceProviderAppointmentRequestingSupplierDIPID"),
            b012.get("serviceProviderAppointmentRequestingSupplierMPID"),
        )
        registry = self.sim.registry()
        if supplier[0] not in registry.participants:
            return
        accepted = custom.get("B007", {}).get("responseCode") == "A"
        reason = custom.get("B007", {}).get("proposedAppointmentResponseCode")
        common = self._chain_arguments(regs, facts, supplier)
        recipients = list(dict.fromkeys([supplier[0], facts["provider"][0]]))
        outcome = "Accepted" if accepted else "Rejected"
        self._send(
            "IF-035",
            messages.appointment(
                "IF-035",
                recipients=recipients,
                event=f"[{facts['service']}App{outcome}]",
                response=("A" if accepted else "R", reason),
                **common,
            ),
        )
        if accepted:
            self._send("IF-036", messages.appointment("IF-036", recipients=recipients, **common))
            if facts["mpan"]:
                entry = self.sim.store.mpan(facts["mpan"])
                if entry is not None:
                    provider = registry.participants.get(facts["provider"][0])
                    if provider is not None:
                        entry["parties"][provider.role] = provider.dip_id
                        self.sim.store.add_mpan(
                            mpan=entry["mpan"],
                            gsp=entry["gsp"],
                            distributor=entry["distributor"],
                            parties=entry["parties"],
                        )

    # ---- service provider ---------------------------------------------------------------------

    def _sp_on_033(self, sp: Participant, payload: dict[str, Any], config: dict[str, Any]) -> None:
        facts = self._appointment_facts(payload)
        common_in = payload["CommonBlock"]
        regs_id = common_in["S1"]["senderDIPID"]
        b012 = payload.get("CustomBlock", {}).get("B012", {})
        supplier = (
            b012.get("serviceProviderAppointmentRequestingSupplierDIPID"),
            b012.get("serviceProviderAppointmentRequestingSupplierMPID"),
        )
        accept = self.rng.random() < float(config["accept_share"])
        self._send(
            "IF-034",
            messages.appointment(
                "IF-034",
                service=facts["service"],
                sender=sp.dip_id,
                role=sp.role,
                mpan=facts["mpan"],
                supplier=supplier,
                provider=facts["provider"],
                effective=facts["effective"],
                env=self.sim.settings.env,
                recipients=[regs_id],
                correlation=facts["correlation"],
                distributor=facts["distributor"],
                registration_id=facts["registration_id"],
                response=("A", "SP000") if accept else ("R", str(config["reject_code"])),
            ),
        )
