"""The traffic generator: realistic message streams towards the configured (real) participants.

Messages are produced by simulated counterparties (see :func:`setup_simulated`) and go through
the same L1 validation, routing and push path as messages sent over the API:

- IF-021 half-hourly consumption (48 UTC periods, MPANs with valid check digits) from the
  simulated SDS, routed to the MPAN's supplier and distributor by the MPAN registry;
- IF-041 readings from the simulated SDS;
- IF-001 registrations from the simulated Registration Service;
- the appointment chain: for a supplier target, IF-032, IF-035 and IF-036 from the Registration
  Service; for a service-provider target, the simulated supplier sends IF-031 to the simulated
  Registration Service, which asks the target with IF-033 and waits for its IF-034.

``fault_share`` of the IF-021 messages carry a business fault a recipient should catch (MPAN
check digit, 47 periods, a negative value, a settlement date not at midnight).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from dataclasses import dataclass, field
from typing import Any

from dipsim import messages
from dipsim.engine import Simulator
from dipsim.store import Participant, Store

# Simulated counterparties: (DIP ID, MPID, role, behaviour).
SIMULATED: list[tuple[str, str, str, str]] = [
    ("4000000001", "RGSV", "REGS", "regs"),
    ("3000000001", "SDSA", "SDS", "sp"),
    ("3000000002", "MSSA", "MSS", "sp"),
    ("1999999991", "SIMS", "SUP", "ack"),
    ("5000000001", "MDSV", "MDS", "ack"),
    ("2000000020", "LDSA", "LDSO", "ack"),
]
REGS_ID, SDS_ID, MSS_ID, SIM_SUP_ID, MDS_ID, LDSO_ID = (row[0] for row in SIMULATED)
SERVICE_ROLES = {"SDS": "DS", "ADS": "DS", "UMSDS": "DS", "MSS": "MS", "MSA": "MS", "UMSO": "MS"}
IF021_FAULTS = ("check_digit", "short_day", "negative", "not_midnight")


def setup_simulated(store: Store, env: str = "UIT") -> None:
    """Register the simulated counterparties and IF-021's always-recipient (idempotent)."""
    for dip_id, mpid, role, behaviour in SIMULATED:
        store.upsert_participant(
            dip_id=dip_id,
            mpid=mpid,
            role=role,
            api_key=None,
            env=env,
            simulated=behaviour,
            name=f"simulated {role}",
        )
    store.set_route("IF-021", "always", [MDS_ID])


@dataclass
class TrafficRun:
    """One running stream: its parameters and what it has produced so far."""

    rate: float
    duration: float
    fault_share: float
    targets: list[str]
    mix: dict[str, float]
    count: int = 0  # stop after this many generated messages (0: no limit)
    started: float = field(default_factory=time.time)
    sent: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    running: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "duration": self.duration,
            "fault_share": self.fault_share,
            "targets": self.targets,
            "mix": self.mix,
            "count": self.count,
            "started": self.started,
            "sent": self.sent,
            "rejected": self.rejected,
            "running": self.running,
        }


DEFAULT_MIX = {"IF-021": 0.75, "IF-041": 0.1, "IF-001": 0.05, "chain": 0.1}


class Traffic:
    """Runs at most one :class:`TrafficRun` at a time inside a serving dipsim."""

    def __init__(self, sim: Simulator, rng: random.Random | None = None) -> None:
        self.sim = sim
        self.rng = rng or random.Random()
        self.run: TrafficRun | None = None
        self.task: asyncio.Task[None] | None = None
        self._mpans: dict[str, list[dict[str, Any]]] = {}

    def targets(self, wanted: list[str] | None) -> list[Participant]:
        registry = self.sim.registry()
        chosen = [
            p
            for p in registry.participants.values()
            if p.kind == "participant" and not p.simulated and p.env == self.sim.settings.env
        ]
        if wanted:
            chosen = [p for p in chosen if p.dip_id in wanted]
        return sorted(chosen, key=lambda p: p.dip_id)

    async def start(
        self,
        *,
        rate: float,
        duration: float = 0.0,
        fault_share: float = 0.0,
        targets: list[str] | None = None,
        mix: dict[str, float] | None = None,
        count: int = 0,
        seed: int | None = None,
    ) -> TrafficRun:
        """Start a stream (stopping any running one). ``duration`` 0 runs until stopped; ``count``
        stops it after that many messages (chosen kinds, not channel messages); ``seed`` makes
        the choices (kinds, targets, faults, values) repeatable."""
        await self.stop()
        if count < 0:
            raise ValueError("count must be 0 (no limit) or more")
        if seed is not None:
            self.rng = random.Random(seed)
        setup_simulated(self.sim.store, self.sim.settings.env)
        chosen = self.targets(targets)
        if targets and not chosen:
            raise ValueError(
                f"none of {targets} is a registered real participant in {self.sim.settings.env}"
            )
        self.run = TrafficRun(
            rate, duration, fault_share, list(targets or []), dict(mix or DEFAULT_MIX), count
        )
        self.task = asyncio.create_task(self._loop(self.run))
        return self.run

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        if self.run is not None:
            self.run.running = False
        self.task = None

    def _pool(self, target: Participant, size: int = 40) -> list[dict[str, Any]]:
        """MPANs appointed to ``target`` in its role, created and registered on first use."""
        pool = self._mpans.get(target.dip_id)
        if pool:
            return pool
        store = self.sim.store
        pool = store.mpans_for(target.role, target.dip_id, limit=size)
        rows: list[Any] = []
        while len(pool) + len(rows) < size:
            mpan = messages.make_mpan(self.rng, "20")
            parties = {
                "SUP": SIM_SUP_ID,
                "SDS": SDS_ID,
                "MSS": MSS_ID,
                "LDSO": LDSO_ID,
                target.role: target.dip_id,
            }
            rows.append((mpan, "_H", LDSO_ID, parties))
        if rows:
            store.add_mpans(rows)
            pool += [{"mpan": m, "gsp": g, "distributor": d, "parties": p} for m, g, d, p in rows]
        self._mpans[target.dip_id] = pool
        return pool

    async def _loop(self, run: TrafficRun) -> None:
        tick = 0.1
        credit = 0.0
        kinds = list(run.mix)
        weights = [run.mix[k] for k in kinds]
        targets: list[Participant] = []
        refreshed = 0.0
        generated = 0
        while run.running:
            if run.count and generated >= run.count:
                break
            if run.duration and time.time() - run.started >= run.duration:
                break
            if time.monotonic() - refreshed > 5.0:
                # Participants registered after the stream started (a demo seeding its tenants
                # while dipsim is already up) join it within a few seconds.
                targets = self.targets(run.targets or None)
                refreshed = time.monotonic()
            if not targets:
                await asyncio.sleep(tick)
                continue
            credit += run.rate * tick
            count = int(credit)
            credit -= count
            if run.count:
                count = min(count, run.count - generated)
            generated += count
            batches: dict[str, list[dict[str, Any]]] = {}
            for _ in range(count):
                target = self.rng.choice(targets)
                kind = self.rng.choices(kinds, weights)[0]
                for channel, payload in self._make(kind, target, run):
                    batches.setdefault(channel, []).append({"payload": payload})
            for channel, items in batches.items():
                outcome = self.sim.ingest(channel, items, None)
                if outcome.status == 201:
                    run.sent[channel] = run.sent.get(channel, 0) + len(items)
                    self.sim.count("traffic.sent", len(items))
                else:
                    run.rejected += len(items)
                    self.sim.count("traffic.rejected", len(items))
            await asyncio.sleep(tick)
        run.running = False

    def _make(
        self, kind: str, target: Participant, run: TrafficRun
    ) -> list[tuple[str, dict[str, Any]]]:
        env = self.sim.settings.env
        entry = self.rng.choice(self._pool(target))
        mpan = entry["mpan"]
        today = dt.datetime.now(dt.UTC).date()
        effective = f"{today + dt.timedelta(days=14):%Y-%m-%d}T00:00:00+00:00"
        service = SERVICE_ROLES.get(target.role)
        if kind == "IF-021":
            fault = self.rng.choice(IF021_FAULTS) if self.rng.random() < run.fault_share else None
            payload = messages.if021(
                sender=SDS_ID,
                role="SDS",
                mpan=mpan,
                day=today - dt.timedelta(days=1),
                rng=self.rng,
                env=env,
                distributor=LDSO_ID,
                fault=fault,
                recipients=[] if target.role in {"SUP", "LDSO"} else [target.dip_id],
            )
            return [("IF-021", payload)]
        if kind == "IF-041":
            payload = messages.if041(
                sender=SDS_ID,
                role="SDS",
                mpan=mpan,
                read_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
                rng=self.rng,
                env=env,
                distributor=LDSO_ID,
                recipients=[] if target.role == "SUP" else [target.dip_id],
            )
            return [("IF-041", payload)]
        if kind == "IF-001":
            payload = messages.if001(
                sender=REGS_ID,
                mpan=mpan,
                incoming=(target.dip_id, target.mpid),
                effective=effective,
                env=env,
                recipients=[target.dip_id],
                distributor=LDSO_ID,
                outgoing=("1999999991", "SIMS") if self.rng.random() < 0.7 else None,
            )
            return [("IF-001", payload)]
        if service is not None:
            # The target is a service provider: a simulated supplier asks the simulated
            # Registration Service to appoint it, which sends the target an IF-033.
            payload = messages.appointment(
                "IF-031",
                service=service,
                sender=SIM_SUP_ID,
                role="SUP",
                mpan=mpan,
                supplier=(SIM_SUP_ID, "SIMS"),
                provider=(target.dip_id, target.mpid),
                effective=effective,
                env=env,
                recipients=[REGS_ID],
                distributor=LDSO_ID,
                correlation=f"CI-{today:%Y%m%d}-{self.rng.randrange(10**12):012d}",
            )
            return [("IF-031", payload)]
        provider = (SDS_ID, "SDSA")
        common = {
            "service": "DS",
            "sender": REGS_ID,
            "role": "REGS",
            "mpan": mpan,
            "supplier": (target.dip_id, target.mpid),
            "provider": provider,
            "effective": effective,
            "env": env,
            "recipients": [target.dip_id],
            "distributor": LDSO_ID,
        }
        return [
            ("IF-032", messages.appointment("IF-032", **common)),
            ("IF-035", messages.appointment("IF-035", **common)),
            ("IF-036", messages.appointment("IF-036", **common)),
        ]
