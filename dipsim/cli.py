"""Command line of dipsim: ``python -m dipsim <command> ...`` (see dipsim/README.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from dipsim import pki
from dipsim.config import Settings
from dipsim.store import Store
from dipsim.traffic import SIMULATED, Traffic, setup_simulated


def _admin(url: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        sys.exit(f"{method} {path}: HTTP {err.code} {err.read().decode(errors='replace')}")
    except urllib.error.URLError as err:
        sys.exit(f"cannot reach the admin API at {url}: {err.reason}")


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


# ---- ca -------------------------------------------------------------------------------------------


def cmd_ca_init(args: argparse.Namespace) -> None:
    paths = pki.init_ca(args.dir, dip_id=args.dip_id, extra_sans=args.san or [])
    print(f"CA ready in {paths.root} (trust anchor {paths.ca_cert})")


def cmd_ca_issue(args: argparse.Namespace) -> None:
    cert, key = pki.issue_to_files(
        args.dir,
        dip_ids=args.dip_id,
        kind=args.kind,
        out=args.out,
        days=args.days,
        common_name=args.cn,
        sans=args.san or [],
        expired=args.expired,
    )
    print(f"{cert}\n{key}")


def cmd_ca_sign(args: argparse.Namespace) -> None:
    try:
        path = pki.sign_csr(
            args.dir,
            Path(args.csr).read_bytes(),
            kind=args.kind,
            dip_ids=args.dip_id,
            out=args.out,
            days=args.days,
        )
    except (OSError, ValueError) as exc:
        sys.exit(f"dipsim ca sign: {exc}")
    print(path)


# ---- registry -------------------------------------------------------------------------------------


def cmd_participant_add(args: argparse.Namespace) -> None:
    store = Store(args.data_dir)
    if args.dcp_id:
        dcp = store.registry().participants.get(args.dcp_id)
        if dcp is None or dcp.kind != "dcp":
            sys.exit(f"{args.dcp_id} is not a registered DCP: add it first with 'dcp add'")
    store.upsert_participant(
        dip_id=args.dip_id,
        mpid=args.mpid,
        role=args.role,
        api_key=args.api_key,
        dcp_id=args.dcp_id,
        env=args.env,
        simulated=args.simulated,
        name=args.name,
    )
    print(f"participant {args.dip_id} ({args.mpid} {args.role}) registered in {args.env}")


def cmd_dcp_add(args: argparse.Namespace) -> None:
    store = Store(args.data_dir)
    store.upsert_participant(
        dip_id=args.dip_id,
        mpid=args.mpid,
        role="DCP",
        api_key=args.api_key,
        env=args.env,
        kind="dcp",
        name=args.name,
    )
    print(f"DCP {args.dip_id} registered in {args.env}")


def cmd_participant_remove(args: argparse.Namespace) -> None:
    Store(args.data_dir).remove_participant(args.dip_id)


def cmd_participant_list(args: argparse.Namespace) -> None:
    registry = Store(args.data_dir).registry()
    for p in sorted(registry.participants.values(), key=lambda p: p.dip_id):
        extra = f" dcp={p.dcp_id}" if p.dcp_id else ""
        extra += f" simulated={p.simulated}" if p.simulated else ""
        print(f"{p.dip_id} {p.mpid} {p.role} {p.kind} {p.env}{extra}")


def cmd_mpan_add(args: argparse.Namespace) -> None:
    parties = {}
    for item in args.party or []:
        role, _, dip_id = item.partition("=")
        if not dip_id:
            sys.exit(f"--party takes ROLE=DIPID, not {item!r}")
        parties[role] = dip_id
    Store(args.data_dir).add_mpan(
        mpan=args.mpan, gsp=args.gsp, distributor=args.distributor, parties=parties
    )
    print(f"MPAN {args.mpan} registered: {parties}")


def cmd_route_set(args: argparse.Namespace) -> None:
    store = Store(args.data_dir)
    if args.always is not None:
        store.set_route(args.interface, "always", [v for v in args.always.split(",") if v])
    if args.secondary is not None:
        store.set_route(args.interface, "secondary", [v for v in args.secondary.split(",") if v])


def cmd_simulated_setup(args: argparse.Namespace) -> None:
    setup_simulated(Store(args.data_dir), args.env)
    for dip_id, mpid, role, behaviour in SIMULATED:
        print(f"{dip_id} {mpid} {role} ({behaviour})")


# ---- serve --------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> None:

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    pki.init_ca(args.ca_dir)
    settings = Settings(
        data_dir=Path(args.data_dir),
        ca_dir=Path(args.ca_dir),
        host=args.host,
        port=args.port,
        admin_host=args.admin_host,
        admin_port=None if args.no_admin else args.admin_port,
        env=args.env,
        dip_id=args.dip_id,
        spec_dir=Path(args.spec_dir) if args.spec_dir else None,
        skew_seconds=args.skew_seconds,
        max_body_bytes=args.max_body_bytes,
        max_batch_messages=args.max_batch_messages,
        rate_limit_per_key=args.rate_limit,
        retry_after_seconds=args.retry_after,
        strict_mpan_routing=args.strict_mpan_routing,
        check_mpan_digit=args.check_mpan_digit,
        push_batch_max=args.push_batch,
        push_concurrency=args.push_concurrency,
        push_parallel_per_target=args.push_parallel,
        push_timeout_seconds=args.push_timeout,
        retry_base_seconds=args.retry_base,
        retry_factor=args.retry_factor,
        retry_max_delay_seconds=args.retry_max_delay,
        max_attempts=args.max_attempts,
        retention_hours=args.retention_hours,
        allow_http_webhooks=args.allow_http_webhooks,
        webhook_ca_files=[Path(p) for p in args.webhook_ca or []],
        public_base_url=args.public_url,
    )
    try:
        asyncio.run(_serve(settings, args))
    except FileNotFoundError as err:
        sys.exit(f"dipsim: {err}")
    except OSError as err:
        sys.exit(f"dipsim: cannot serve: {err}")


async def _serve(settings: Settings, args: argparse.Namespace) -> None:
    # Imported here so that the set-up commands do not load the web stack.
    from dipsim.server import Service

    service = Service(settings)
    if args.simulated:
        setup_simulated(service.sim.store, settings.env)
    await service.start()
    if args.traffic_rate > 0:
        traffic = service.extras.setdefault("traffic", Traffic(service.sim))
        await traffic.start(rate=args.traffic_rate, fault_share=args.traffic_fault_share)
    admin = f" admin={service.admin_url}" if service.admin_port else ""
    print(
        f"dipsim ready: api={service.base_url}{admin} env={settings.env} schemas={service.sim.validators.source}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await service.stop()


# ---- admin clients --------------------------------------------------------------------------------


def cmd_traffic(args: argparse.Namespace) -> None:
    if args.stop:
        _print(_admin(args.admin_url, "DELETE", "/admin/traffic"))
        return
    body = {"rate": args.rate, "duration": args.duration, "fault_share": args.fault_share}
    if args.targets:
        body["targets"] = args.targets.split(",")
    _print(_admin(args.admin_url, "POST", "/admin/traffic", body))


def cmd_fault_add(args: argparse.Namespace) -> None:
    params: dict[str, Any] = {}
    for item in args.param or []:
        key, _, value = item.partition("=")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    rule: dict[str, Any] = {
        "kind": args.kind,
        "direction": args.direction,
        "probability": args.probability,
        "params": params,
    }
    for name in ("channel", "dip_id", "duration"):
        if getattr(args, name) is not None:
            rule[name] = getattr(args, name)
    if args.count is not None:
        rule["remaining"] = args.count
    _print(_admin(args.admin_url, "POST", "/admin/faults", rule))


def cmd_fault_list(args: argparse.Namespace) -> None:
    _print(_admin(args.admin_url, "GET", "/admin/faults"))


def cmd_fault_clear(args: argparse.Namespace) -> None:
    path = "/admin/faults" if args.id is None else f"/admin/faults/{args.id}"
    _print(_admin(args.admin_url, "DELETE", path))


def cmd_log(args: argparse.Namespace) -> None:
    query = f"?limit={args.limit}" + (f"&channel={args.channel}" if args.channel else "")
    for row in _admin(args.admin_url, "GET", f"/admin/messages{query}"):
        print(
            f"{row['receivedAt'][:19]} {row['channel']} {row['eventCode']:<28} {row['sender']} -> {','.join(row['recipients'])} {row['transactionID']}"
        )


def cmd_counters(args: argparse.Namespace) -> None:
    _print(_admin(args.admin_url, "GET", "/admin/counters"))


def cmd_counterparty(args: argparse.Namespace) -> None:
    body = {
        k: v
        for k, v in vars(args).items()
        if k
        in {
            "accept_share",
            "delay_seconds",
            "reject_code",
            "status_share",
            "status_error_share",
            "status_error_code",
        }
        and v is not None
    }
    _print(_admin(args.admin_url, "PUT" if body else "GET", "/admin/counterparties", body or None))


# ---- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dipsim", description="A simulator of the MHHS DIP"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ca = sub.add_parser("ca", help="the test CA and certificates").add_subparsers(
        dest="ca_command", required=True
    )
    p = ca.add_parser(
        "init", help="create the CA, dipsim's server cert and the DIP's own certs (idempotent)"
    )
    p.add_argument("--dir", required=True)
    p.add_argument(
        "--dip-id", default=pki.DEFAULT_DIP_ID, help="the DIP's own DIP ID in its certificates"
    )
    p.add_argument("--san", action="append", help="extra DNS name or IP for the server certificate")
    p.set_defaults(func=cmd_ca_init)
    p = ca.add_parser("issue", help="issue a participant or DCP certificate")
    p.add_argument("--dir", required=True)
    p.add_argument(
        "--dip-id",
        action="append",
        required=True,
        help="repeat for a certificate covering several DIP IDs",
    )
    p.add_argument("--kind", choices=["signing", "mtls", "server"], required=True)
    p.add_argument("--out", required=True, help="writes OUT.crt and OUT.key")
    p.add_argument("--days", type=int, default=825)
    p.add_argument("--cn")
    p.add_argument(
        "--san", action="append", help="DNS name or IP (for webhook server certificates)"
    )
    p.add_argument(
        "--expired", action="store_true", help="issue a certificate that has already expired"
    )
    p.set_defaults(func=cmd_ca_issue)
    p = ca.add_parser(
        "sign", help="sign a certificate signing request (e.g. one Busbar generated) with the CA"
    )
    p.add_argument("--dir", required=True)
    p.add_argument("--csr", required=True, help="the request, PEM")
    p.add_argument(
        "--dip-id", action="append", required=True, help="a DIP ID the certificate covers; repeat"
    )
    p.add_argument("--kind", choices=["signing", "mtls"], required=True)
    p.add_argument("--out", required=True, help="where to write the signed certificate (PEM)")
    p.add_argument("--days", type=int, default=825)
    p.set_defaults(func=cmd_ca_sign)

    def data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", required=True)

    part = sub.add_parser("participant", help="the participant registry").add_subparsers(
        dest="p_command", required=True
    )
    p = part.add_parser("add", help="register (or update) a DIP ID")
    data_dir(p)
    p.add_argument("--dip-id", required=True)
    p.add_argument("--mpid", required=True)
    p.add_argument("--role", required=True)
    p.add_argument("--api-key")
    p.add_argument("--dcp-id")
    p.add_argument("--env", default="UIT")
    p.add_argument("--name")
    p.add_argument(
        "--simulated",
        choices=["regs", "sp", "ack"],
        help="answer inside dipsim instead of a webhook",
    )
    p.set_defaults(func=cmd_participant_add)
    p = part.add_parser("remove")
    data_dir(p)
    p.add_argument("--dip-id", required=True)
    p.set_defaults(func=cmd_participant_remove)
    p = part.add_parser("list")
    data_dir(p)
    p.set_defaults(func=cmd_participant_list)

    dcp = sub.add_parser("dcp", help="DIP Connection Providers").add_subparsers(
        dest="d_command", required=True
    )
    p = dcp.add_parser("add", help="register (or update) a DCP")
    data_dir(p)
    p.add_argument("--dip-id", required=True)
    p.add_argument("--mpid", default="DCPX")
    p.add_argument("--api-key")
    p.add_argument("--env", default="UIT")
    p.add_argument("--name")
    p.set_defaults(func=cmd_dcp_add)

    mpan = sub.add_parser("mpan", help="the MPAN registry").add_subparsers(
        dest="m_command", required=True
    )
    p = mpan.add_parser("add", help="register an MPAN and who is appointed to it")
    data_dir(p)
    p.add_argument("--mpan", required=True)
    p.add_argument("--gsp", default="_H")
    p.add_argument("--distributor", required=True, help="distributor (LDSO) DIP ID")
    p.add_argument("--party", action="append", help="ROLE=DIPID, e.g. SUP=1000000001 (repeat)")
    p.set_defaults(func=cmd_mpan_add)

    route = sub.add_parser("route", help="routing configuration").add_subparsers(
        dest="r_command", required=True
    )
    p = route.add_parser("set", help="set an interface's always recipients and/or secondary roles")
    data_dir(p)
    p.add_argument("--if", dest="interface", required=True)
    p.add_argument("--always", help="comma-separated DIP IDs ('' clears)")
    p.add_argument(
        "--secondary", help="comma-separated roles resolved from the MPAN registry ('' clears)"
    )
    p.set_defaults(func=cmd_route_set)

    simulated = sub.add_parser("simulated", help="simulated counterparties").add_subparsers(
        dest="s_command", required=True
    )
    p = simulated.add_parser(
        "setup", help="register the simulated REGS, SDS, MSS, supplier, MDS and LDSO"
    )
    data_dir(p)
    p.add_argument("--env", default="UIT")
    p.set_defaults(func=cmd_simulated_setup)

    p = sub.add_parser("serve", help="run the DIP API (HTTPS, mTLS) and the admin API")
    data_dir(p)
    p.add_argument("--ca-dir", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8443)
    p.add_argument("--admin-host", default="127.0.0.1")
    p.add_argument("--admin-port", type=int, default=8444)
    p.add_argument("--no-admin", action="store_true")
    p.add_argument("--env", default="UIT", choices=["PRD", "SITB", "SIT", "UIT", "DEV"])
    p.add_argument("--dip-id", default=pki.DEFAULT_DIP_ID)
    p.add_argument(
        "--spec-dir", help="folder of the official DIP API spec (unresolved YAML) for L1 validation"
    )
    p.add_argument("--skew-seconds", type=float, default=300.0)
    p.add_argument("--max-body-bytes", type=int, default=20 * 1024 * 1024)
    p.add_argument("--max-batch-messages", type=int, default=5000)
    p.add_argument(
        "--rate-limit", type=float, default=0.0, help="requests/s per API key before 429 (0: off)"
    )
    p.add_argument(
        "--retry-after",
        type=float,
        default=5.0,
        help="Retry-After seconds on an injected 429/503 that names none",
    )
    p.add_argument(
        "--strict-mpan-routing", action="store_true", help="MSG1038 for MPANs not in the registry"
    )
    p.add_argument(
        "--check-mpan-digit",
        action="store_true",
        help="MSG1038 for MPANs failing their check digit",
    )
    p.add_argument("--push-batch", type=int, default=100)
    p.add_argument("--push-concurrency", type=int, default=16)
    p.add_argument(
        "--push-parallel",
        type=int,
        default=1,
        help="batches in flight per recipient and channel (1 keeps order)",
    )
    p.add_argument("--push-timeout", type=float, default=15.0)
    p.add_argument("--retry-base", type=float, default=2.0)
    p.add_argument("--retry-factor", type=float, default=2.0)
    p.add_argument("--retry-max-delay", type=float, default=600.0)
    p.add_argument("--max-attempts", type=int, default=12)
    p.add_argument("--retention-hours", type=float, default=72.0)
    p.add_argument("--allow-http-webhooks", action="store_true")
    p.add_argument(
        "--webhook-ca", action="append", help="extra CA file to trust for webhook servers"
    )
    p.add_argument(
        "--public-url", help="base URL senders use, if not the Host header (behind a proxy)"
    )
    p.add_argument(
        "--simulated", action="store_true", help="register the simulated counterparties at start"
    )
    p.add_argument(
        "--traffic-rate", type=float, default=0.0, help="start a traffic stream at this many msg/s"
    )
    p.add_argument("--traffic-fault-share", type=float, default=0.05)
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=cmd_serve)

    def admin_url(p: argparse.ArgumentParser) -> None:
        p.add_argument("--admin-url", default="http://127.0.0.1:8444")

    p = sub.add_parser("traffic", help="start or stop the traffic generator of a running dipsim")
    admin_url(p)
    p.add_argument("--rate", type=float, default=1.0, help="messages per second")
    p.add_argument("--duration", type=float, default=0.0, help="seconds (0: until stopped)")
    p.add_argument("--fault-share", type=float, default=0.05)
    p.add_argument("--targets", help="comma-separated DIP IDs (default: every real participant)")
    p.add_argument("--stop", action="store_true")
    p.set_defaults(func=cmd_traffic)

    fault = sub.add_parser("fault", help="faults on demand").add_subparsers(
        dest="f_command", required=True
    )
    p = fault.add_parser("add")
    admin_url(p)
    p.add_argument("--kind", required=True)
    p.add_argument("--direction", choices=["ingress", "egress"], default="ingress")
    p.add_argument("--channel")
    p.add_argument("--dip-id", help="caller (ingress) or recipient (egress)")
    p.add_argument("--probability", type=float, default=1.0)
    p.add_argument("--count", type=int, help="fire this many times, then disappear")
    p.add_argument("--duration", type=float, help="seconds the rule stays active")
    p.add_argument(
        "--param", action="append", help="KEY=VALUE, e.g. status=503, ms=2000, seconds=30"
    )
    p.set_defaults(func=cmd_fault_add)
    p = fault.add_parser("list")
    admin_url(p)
    p.set_defaults(func=cmd_fault_list)
    p = fault.add_parser("clear", help="remove one rule (--id) or all")
    admin_url(p)
    p.add_argument("--id", type=int)
    p.set_defaults(func=cmd_fault_clear)

    p = sub.add_parser("log", help="the latest accepted messages")
    admin_url(p)
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--channel")
    p.set_defaults(func=cmd_log)
    p = sub.add_parser("counters", help="counters and delivery states")
    admin_url(p)
    p.set_defaults(func=cmd_counters)
    p = sub.add_parser("counterparty", help="show or tune the simulated counterparties")
    admin_url(p)
    p.add_argument("--accept-share", type=float)
    p.add_argument("--delay-seconds", type=float)
    p.add_argument("--reject-code")
    p.add_argument("--status-share", type=float)
    p.add_argument("--status-error-share", type=float)
    p.add_argument("--status-error-code")
    p.set_defaults(func=cmd_counterparty)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)
