"""dipsim's admin API (plain HTTP, meant for loopback): faults, counters, the message log, traffic
and counterparty settings, plus a small HTML status page at ``/``.

This is not part of the DIP: it is how tests, the CLI and a curious human steer and inspect the
simulator. It has no authentication, so keep it on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from dipsim.faults import KINDS, FaultError
from dipsim.store import unpack
from dipsim.traffic import Traffic

if TYPE_CHECKING:
    from dipsim.server import Service

SERVICE_KEY: web.AppKey[Any] = web.AppKey("service", object)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(body, default=str).encode(), content_type="application/json"
    )


def _message_row(row: Any, deliveries: list[Any] | None = None) -> dict[str, Any]:
    out = {
        "transactionID": row["txn"],
        "channel": row["channel"],
        "eventCode": row["event_code"],
        "sender": row["sender"],
        "senderUniqueReference": row["sur"],
        "mpan": row["mpan"],
        "receivedAt": dt.datetime.fromtimestamp(row["received_at"], dt.UTC).isoformat(),
        "recipients": json.loads(row["recipients"]),
    }
    if deliveries is not None:
        out["deliveries"] = [_delivery_row(d) for d in deliveries]
    return out


def _delivery_row(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "recipient": row["recipient"],
        "channel": row["channel"],
        "state": row["state"],
        "attempts": row["attempts"],
        "replay": bool(row["replay"]),
        "lastStatus": row["last_status"],
        "lastError": row["last_error"],
        "nextAt": row["next_at"],
    }


async def _read_json(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError as err:
        raise web.HTTPBadRequest(text="body is not JSON") from err


def build_admin(service: Service) -> web.Application:
    """The admin application for a running :class:`dipsim.server.Service`."""
    app = web.Application()
    app[SERVICE_KEY] = service
    sim = service.sim
    routes = web.RouteTableDef()

    @routes.get("/admin/health")
    async def health(request: web.Request) -> web.Response:
        return _json(
            {
                "status": "ok",
                "env": sim.settings.env,
                "dipID": sim.settings.dip_id,
                "schemas": sim.validators.source,
                "api": service.base_url,
                "uptimeSeconds": round(dt.datetime.now(dt.UTC).timestamp() - sim.started_at, 1),
            }
        )

    @routes.get("/admin/counters")
    async def counters(request: web.Request) -> web.Response:
        return _json(
            {
                "counters": dict(sorted(sim.counters.items())),
                "deliveries": sim.store.delivery_counts(),
            }
        )

    @routes.get("/admin/messages")
    async def message_list(request: web.Request) -> web.Response:
        q = request.query
        rows = sim.store.find_messages(
            channel=q.get("channel", "").upper() or None,
            sender=q.get("sender") or None,
            recipient=q.get("recipient") or None,
            mpan=q.get("mpan") or None,
            limit=int(q.get("limit", "100")),
            newest_first=True,
        )
        return _json([_message_row(row) for row in rows])

    @routes.get("/admin/messages/{txn}")
    async def message_detail(request: web.Request) -> web.Response:
        row = sim.store.message_by_txn(request.match_info["txn"])
        if row is None:
            raise web.HTTPNotFound(text="no such transaction")
        out = _message_row(row, sim.store.deliveries_for("message", row["seq"]))
        out["payload"] = json.loads(unpack(row["body"]))
        return _json(out)

    @routes.get("/admin/deliveries")
    async def deliveries(request: web.Request) -> web.Response:
        rows = sim.store.list_deliveries(
            state=request.query.get("state") or None,
            recipient=request.query.get("recipient") or None,
            limit=int(request.query.get("limit", "200")),
        )
        return _json([_delivery_row(row) for row in rows])

    @routes.get("/admin/events")
    async def events(request: web.Request) -> web.Response:
        return _json(sim.store.events(int(request.query.get("limit", "100"))))

    @routes.get("/admin/participants")
    async def participants(request: web.Request) -> web.Response:
        registry = sim.registry()
        return _json(
            [
                {
                    "dipID": p.dip_id,
                    "mpid": p.mpid,
                    "role": p.role,
                    "kind": p.kind,
                    "dcpID": p.dcp_id,
                    "env": p.env,
                    "simulated": p.simulated,
                }
                for p in sorted(registry.participants.values(), key=lambda p: p.dip_id)
            ]
        )

    @routes.get("/admin/webhooks")
    async def webhooks(request: web.Request) -> web.Response:
        return _json([dict(row) for row in sim.store.webhooks()])

    @routes.get("/admin/faults")
    async def fault_list(request: web.Request) -> web.Response:
        return _json({"faults": sim.faults.list(), "kinds": KINDS})

    @routes.post("/admin/faults")
    async def fault_add(request: web.Request) -> web.Response:
        try:
            fault = sim.faults.add(await _read_json(request))
        except FaultError as err:
            return _json({"detail": str(err)}, 400)
        return _json({"id": fault.id, **fault.rule}, 201)

    @routes.delete("/admin/faults")
    async def fault_clear(request: web.Request) -> web.Response:
        return _json({"removed": sim.faults.remove(None)})

    @routes.delete("/admin/faults/{id}")
    async def fault_delete(request: web.Request) -> web.Response:
        return _json({"removed": sim.faults.remove(int(request.match_info["id"]))})

    @routes.get("/admin/counterparties")
    async def counterparties_get(request: web.Request) -> web.Response:
        return _json(service.extras["counterparties"].config())

    @routes.put("/admin/counterparties")
    async def counterparties_put(request: web.Request) -> web.Response:
        body = await _read_json(request)
        if not isinstance(body, dict):
            return _json({"detail": "body is an object"}, 400)
        current = sim.store.get_setting("counterparties", {}) or {}
        current.update(body)
        sim.store.set_setting("counterparties", current)
        return _json(service.extras["counterparties"].config())

    @routes.get("/admin/traffic")
    async def traffic_get(request: web.Request) -> web.Response:
        traffic = service.extras.get("traffic")
        return _json(
            traffic.run.as_dict() if traffic is not None and traffic.run is not None else None
        )

    @routes.post("/admin/traffic")
    async def traffic_start(request: web.Request) -> web.Response:
        body = await _read_json(request)
        traffic = service.extras.setdefault("traffic", Traffic(sim))
        try:
            run = await traffic.start(
                rate=float(body.get("rate", 1.0)),
                duration=float(body.get("duration", 0.0)),
                fault_share=float(body.get("fault_share", 0.0)),
                targets=body.get("targets"),
                mix=body.get("mix"),
                count=int(body.get("count", 0)),
                seed=None if body.get("seed") is None else int(body["seed"]),
            )
        except (TypeError, ValueError) as err:
            return _json({"detail": str(err)}, 400)
        return _json(run.as_dict(), 201)

    @routes.delete("/admin/traffic")
    async def traffic_stop(request: web.Request) -> web.Response:
        traffic = service.extras.get("traffic")
        if traffic is not None:
            await traffic.stop()
        return _json({"stopped": True})

    @routes.post("/admin/inject/{channel}")
    async def inject(request: web.Request) -> web.Response:
        """Submit messages as dipsim itself (no credentials): for demos and benchmarks."""
        outcome = sim.ingest(request.match_info["channel"].upper(), await _read_json(request), None)
        return _json(outcome.body, outcome.status)

    @routes.get("/")
    async def page(request: web.Request) -> web.Response:
        counts = sim.store.delivery_counts()
        rows = sim.store.find_messages(limit=50, newest_first=True)
        faults = sim.faults.list()
        parts = [
            "<!doctype html><meta charset=utf-8><title>dipsim</title>",
            "<style>body{font:14px system-ui;margin:2em}td,th{padding:2px 8px;text-align:left}"
            "table{border-collapse:collapse}tr:nth-child(even){background:#f4f4f4}"
            ".bar{display:inline-block;height:10px;background:#3b7dd8;vertical-align:middle}</style>",
            f"<h1>dipsim ({html.escape(sim.settings.env)})</h1>",
            f"<p>API {html.escape(service.base_url)} &middot; schemas: {html.escape(sim.validators.source)}</p>",
            "<h2>Counters</h2><table>",
            *_bar_rows(dict(sim.counters)),
            "</table><h2>Deliveries</h2><table>",
            *_bar_rows(counts),
            f"</table><h2>Faults</h2><pre>{html.escape(json.dumps(faults, indent=1))}</pre>",
            "<h2>Latest messages</h2><table><tr><th>received</th><th>channel</th><th>event</th>"
            "<th>sender</th><th>recipients</th><th>transaction</th></tr>",
        ]
        for row in rows:
            m = _message_row(row)
            parts.append(
                "<tr>"
                + "".join(
                    f"<td>{html.escape(str(v))}</td>"
                    for v in (
                        m["receivedAt"][:19],
                        m["channel"],
                        m["eventCode"],
                        m["sender"],
                        ", ".join(m["recipients"]),
                        m["transactionID"],
                    )
                )
                + "</tr>"
            )
        parts.append("</table>")
        return web.Response(text="".join(parts), content_type="text/html")

    app.add_routes(routes)
    return app


def _bar_rows(values: dict[str, int]) -> list[str]:
    """Table rows with a bar beside each figure, scaled to the largest, so volumes compare at a
    glance."""
    top = max(values.values(), default=0) or 1
    return [
        f"<tr><td>{html.escape(k)}</td><td>{v}</td>"
        f'<td><span class="bar" style="width:{round(240 * v / top)}px"></span></td></tr>'
        for k, v in sorted(values.items())
    ]
