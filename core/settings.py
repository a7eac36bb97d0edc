"""Busbar settings, driven by the environment.

Integrations switch on when their variable is set (SENTRY_DSN). Secrets may be given directly or as
``NAME_FILE`` pointing at a file. The development launcher (``scripts/devenv.py``) sets every
variable below for local runs; production sets them in its service manager.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import overload

from django.utils.csp import CSP
from psycopg.conninfo import conninfo_to_dict

from core.pool import reset_pooled_connection

BASE_DIR = Path(__file__).resolve().parent.parent


@overload
def env(name: str) -> str | None: ...
@overload
def env(name: str, default: str) -> str: ...
def env(name: str, default: str | None = None) -> str | None:
    """Read ``name`` from the environment, or the contents of the file named by ``name_FILE``."""
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        return Path(file_path).read_text().strip()
    return os.environ.get(name, default)


def envbool(name: str, default: bool = False) -> bool:
    value = env(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def envint(name: str, default: int) -> int:
    value = env(name)
    return default if value in (None, "") else int(value)


def envlist(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in (env(name, default) or "").split(",") if item.strip()]


def database_from_url(url: str, *, pool: bool) -> dict:
    """Turn a libpq URL into a Django DATABASES entry (psycopg parses it, so every libpq form works)."""
    parts = conninfo_to_dict(url)
    # UTC from start-up, not only from Django's SET on first connect: it is then what a reset
    # (RESET ALL, DISCARD ALL) goes back to.
    options: dict = {"options": "-c TimeZone=UTC"}
    if pool:
        # Django's built-in psycopg pool. Tenant settings are transaction-local (set_config(...,
        # true)), but a session-level SET, set_config(..., false) or temporary object would survive
        # into the next request on the same connection: each connection is reset on its way back.
        options["pool"] = {
            "min_size": 1,
            "max_size": envint("BUSBAR_DB_POOL_SIZE", 10),
            "timeout": 10,
            "reset": reset_pooled_connection,
        }
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.get("dbname", "busbar"),
        "USER": parts.get("user", ""),
        "PASSWORD": parts.get("password", ""),
        "HOST": parts.get("host", ""),
        "PORT": parts.get("port", ""),
        "CONN_MAX_AGE": 0,
        "OPTIONS": options,
    }


DEBUG = envbool("DJANGO_DEBUG", False)
# No fallback, not even in debug: a fixed key signs sessions anyone could forge. The development
# launcher (core/devenv.py) generates one per checkout and passes it in.
SECRET_KEY = env("DJANGO_SECRET_KEY") or ""
if not SECRET_KEY:
    raise RuntimeError(
        "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) must be set: a long random string, e.g."
        " python -c 'import secrets; print(secrets.token_urlsafe(50))'"
    )
ALLOWED_HOSTS = envlist("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1")
CSRF_TRUSTED_ORIGINS = envlist("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "guardian",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "core",
    "tenants",
    "messaging",
    "console",
]

MIDDLEWARE = [
    "core.middleware.RequestIdMiddleware",
    # Before anything reads input: a NUL character in a value is refused here with a 400.
    "core.middleware.RejectNulMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Inside whitenoise, so static files stay cacheable while every page and API answer is not.
    "core.middleware.NoStoreMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "tenants.middleware.TenantMiddleware",
]

ROOT_URLCONF = "core.urls"
WSGI_APPLICATION = "core.wsgi.application"
ASGI_APPLICATION = "core.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "tenants.context_processors.tenancy",
                "console.context_processors.rights",
            ],
        },
    },
]

# Three roles (DESIGN section 3): the runtime role serves web and workers, the owner runs
# migrations, the support role reads metadata across tenants. Only the runtime role is "default".
_pool = envbool("BUSBAR_DB_POOL", True)
DATABASES = {
    "default": database_from_url(
        env("BUSBAR_DATABASE_URL", "postgresql://busbar_app@127.0.0.1:5432/busbar"), pool=_pool
    ),
    # The runtime role again, on a connection of its own: the evidence that a request left for the
    # DIP (messaging.exchanges) commits there at once, so no rollback of the caller can erase it.
    "evidence": database_from_url(
        env("BUSBAR_DATABASE_URL", "postgresql://busbar_app@127.0.0.1:5432/busbar"), pool=False
    ),
    "owner": database_from_url(
        env("BUSBAR_OWNER_DATABASE_URL", "postgresql://busbar_owner@127.0.0.1:5432/busbar"),
        pool=False,
    ),
    "support": database_from_url(
        env("BUSBAR_SUPPORT_DATABASE_URL", "postgresql://busbar_support@127.0.0.1:5432/busbar"),
        pool=False,
    ),
}
DATABASE_ROUTERS = ["core.db.OwnerMigratesRouter"]
DB_RUNTIME_ROLE = DATABASES["default"]["USER"] or "busbar_app"
DB_SUPPORT_ROLE = DATABASES["support"]["USER"] or "busbar_support"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
LOGIN_URL = "console:login"
OTP_TOTP_ISSUER = "Busbar"
# A half-finished sign-in (password right, second factor not yet given) expires after this.
MFA_PENDING_SECONDS = envint("BUSBAR_MFA_PENDING_SECONDS", 300)
# A second-factor enrolment link (sent by a tenant admin that requires one) works this long.
BUSBAR_ENROLMENT_LINK_HOURS = envint("BUSBAR_ENROLMENT_LINK_HOURS", 72)
# Links in emails (invitations, enrolment) start with this: the console's public address.
BUSBAR_PUBLIC_URL = env("BUSBAR_PUBLIC_URL", "http://127.0.0.1:8000")
LOGIN_REDIRECT_URL = "console:home"
LOGOUT_REDIRECT_URL = "console:login"
# Sign-in throttling (console/throttle.py): failures per (address, username), per address and per
# username within a short window. Only the guilty pair or address is refused; nobody is locked out.
LOGIN_THROTTLE_ATTEMPTS = envint("BUSBAR_LOGIN_THROTTLE_ATTEMPTS", 5)
LOGIN_THROTTLE_ADDRESS_ATTEMPTS = envint("BUSBAR_LOGIN_THROTTLE_ADDRESS_ATTEMPTS", 50)
LOGIN_THROTTLE_USERNAME_ATTEMPTS = envint("BUSBAR_LOGIN_THROTTLE_USERNAME_ATTEMPTS", 20)
LOGIN_THROTTLE_WINDOW_SECONDS = envint("BUSBAR_LOGIN_THROTTLE_WINDOW_SECONDS", 300)

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
# Served over HTTPS (production, behind nginx): cookies travel only over TLS and browsers are told
# (HSTS) to use nothing else. Only local development over plain http turns this off.
HTTPS = envbool("BUSBAR_HTTPS", not DEBUG)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = envint("BUSBAR_HSTS_SECONDS", 2 * 365 * 24 * 3600) if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = False  # other hosts under the same domain are not ours to pin
SESSION_COOKIE_AGE = envint("BUSBAR_SESSION_SECONDS", 8 * 3600)
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Scripts, styles, images and fonts only from this origin's own files: no inline script or style,
# no eval, nothing from a CDN. Pages keep behaviour in static/console/console.js (data attributes).
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "font-src": [CSP.SELF],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "Europe/London"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/0")
# Prefixes every Redis key (cache entries and Celery's queues), so several Busbars (two checkouts'
# test runs, a demo beside them) can share one Redis database without touching each other's keys.
REDIS_KEY_PREFIX = env("BUSBAR_REDIS_PREFIX", "")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{REDIS_KEY_PREFIX}busbar",
    }
}

# Celery carries only "look at row N": PostgreSQL is the truth, so Redis may lose everything.
CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = envint("BUSBAR_TASK_TIME_LIMIT", 300)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 30
# The visibility timeout must exceed the longest task, or Redis redelivers a task still running.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_TASK_TIME_LIMIT * 4,
    "global_keyprefix": REDIS_KEY_PREFIX,
}
CELERY_TASK_IGNORE_RESULT = True
# Celery's Django fix-up closes Django's connection pool after every task of a prefork worker
# unless this is set, so every task opened a new PostgreSQL backend (17 a second in the
# end-to-end benchmark's burst). Set, the fix-up closes it every 2 x 1,000 task starts and ends;
# between, core.celery hands each task's connection back to the pool, reset, as a web request does.
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_DEFAULT_QUEUE = "maintenance"
# One queue per family, each served by its own worker pool, so one cannot starve another.
CELERY_TASK_ROUTES = {
    "core.tasks.*": {"queue": "maintenance"},
    "tenants.tasks.*": {"queue": "maintenance"},
    "messaging.tasks.rotate_certificate_task": {"queue": "maintenance"},
    "messaging.tasks.sweep_task": {"queue": "maintenance"},
    "messaging.tasks.ensure_partitions_task": {"queue": "maintenance"},
    "messaging.tasks.keep_tables_task": {"queue": "maintenance"},
    "messaging.tasks.seal_ledgers_task": {"queue": "maintenance"},
    "messaging.tasks.verify_ledgers_task": {"queue": "maintenance"},
    "messaging.tasks.generate_evidence_pack_task": {"queue": "maintenance"},
    "messaging.tasks.purge_expired_payloads_task": {"queue": "maintenance"},
    "messaging.tasks.archive_audit_task": {"queue": "maintenance"},
    "messaging.tasks.reconciliation_task": {"queue": "maintenance"},
    "messaging.tasks.reconcile_tenant_task": {"queue": "maintenance"},
    "messaging.tasks.inbound.*": {"queue": "inbound"},
    "messaging.tasks.outbound.*": {"queue": "outbound"},
    "messaging.tasks.delivery.*": {"queue": "delivery"},
    "messaging.events.tasks.*": {"queue": "delivery"},
}
CELERY_BEAT_SCHEDULE: dict = {
    "downstream-sweeper": {
        "task": "messaging.events.tasks.sweep_deliveries_task",
        "schedule": 30.0,
    },
    "heartbeat": {"task": "core.tasks.record_heartbeat_task", "schedule": 30.0},
    "sweep-messages": {
        "task": "messaging.tasks.sweep_task",
        "schedule": envint("BUSBAR_SWEEP_SECONDS", 30),
    },
    "seal-ledgers": {
        "task": "messaging.tasks.seal_ledgers_task",
        "schedule": envint("BUSBAR_SEAL_SECONDS", 10),
    },
    "verify-ledgers": {"task": "messaging.tasks.verify_ledgers_task", "schedule": 900.0},
    "purge-payloads": {"task": "messaging.tasks.purge_expired_payloads_task", "schedule": 86400.0},
    "archive-audit": {"task": "messaging.tasks.archive_audit_task", "schedule": 86400.0},
    "message-partitions": {"task": "messaging.tasks.ensure_partitions_task", "schedule": 86400.0},
    # Dead row versions and planner statistics of the tables written fast (messaging.store.upkeep).
    # A run still queued when the next is due is dropped: a long VACUUM must not pile runs up.
    "store-upkeep": {
        "task": "messaging.tasks.keep_tables_task",
        "schedule": envint("BUSBAR_UPKEEP_SECONDS", 10),
        "options": {"expires": envint("BUSBAR_UPKEEP_SECONDS", 10)},
    },
    # Reconciliation controls (messaging/reconciliation): every run's results are kept.
    "reconciliation": {
        "task": "messaging.tasks.reconciliation_task",
        "schedule": envint("BUSBAR_RECONCILIATION_SECONDS", 900),
    },
    "certificate-maintenance": {
        "task": "tenants.tasks.certificate_maintenance_task",
        "schedule": 3600.0,
    },
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "core.api.exception_handler",
    "UNAUTHENTICATED_USER": None,
    # No OPTIONS self-description: the OpenAPI schema is the description, and OPTIONS on an
    # object URL would answer 200 without looking the object up. OPTIONS is a 405.
    "DEFAULT_METADATA_CLASS": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Busbar API",
    "DESCRIPTION": (
        "Client systems' interface to Busbar: submit outbound DIP messages, read inbound events, "
        "inspect identities and channels. Authenticate with `Authorization: Api-Key <key>`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Bearer token a Prometheus scraper presents for /metrics (whose labels name tenants, connections
# and certificate fingerprints). Unset or empty: /metrics is off. BUSBAR_METRICS_TOKEN_FILE works too.
BUSBAR_METRICS_TOKEN = env("BUSBAR_METRICS_TOKEN") or None

# Key-encryption keys for envelope encryption (core/crypto.py): "kid:base64key,kid2:base64key",
# never stored in the database. The active one wraps new secrets; the others still unwrap.
BUSBAR_KEKS = env("BUSBAR_KEKS", "")
BUSBAR_ACTIVE_KEK = env("BUSBAR_ACTIVE_KEK", "")

# The evidence key (Ed25519, PEM) signs ledger seals and evidence packs; like the KEKs it lives
# outside the database. Its public half is published at /evidence/key for auditors.
BUSBAR_EVIDENCE_KEY = env("BUSBAR_EVIDENCE_KEY", "")
BUSBAR_EVIDENCE_DIR = Path(env("BUSBAR_EVIDENCE_DIR", str(BASE_DIR / "var" / "evidence")))
# A seal covers entries older than this, so a transaction still open never misses its seal.
BUSBAR_EVIDENCE_SETTLE_SECONDS = envint("BUSBAR_EVIDENCE_SETTLE_SECONDS", 120)
BUSBAR_EVIDENCE_PACK_DAYS = envint("BUSBAR_EVIDENCE_PACK_DAYS", 30)
# Audit log retention (the DIP's Code of Connection floor: three months live, twelve archived;
# smaller values are raised to that floor). Archived months are compressed files in this folder.
BUSBAR_AUDIT_LIVE_DAYS = envint("BUSBAR_AUDIT_LIVE_DAYS", 92)
BUSBAR_AUDIT_ARCHIVE_DAYS = envint("BUSBAR_AUDIT_ARCHIVE_DAYS", 365)
BUSBAR_AUDIT_ARCHIVE_DIR = Path(
    env("BUSBAR_AUDIT_ARCHIVE_DIR", str(BASE_DIR / "var" / "audit-archive"))
)

# Downstream delivery of normalised events (messaging/events). URLs on private, loopback or
# link-local addresses are refused unless listed here: "127.0.0.1:8701,[::1]:8701,10.0.0.0/8".
BUSBAR_DOWNSTREAM_ALLOW = env("BUSBAR_DOWNSTREAM_ALLOW", "")
DOWNSTREAM_CONNECT_TIMEOUT = float(env("BUSBAR_DOWNSTREAM_CONNECT_TIMEOUT", "3"))
DOWNSTREAM_READ_TIMEOUT = float(env("BUSBAR_DOWNSTREAM_READ_TIMEOUT", "10"))
# A CA file trusted beside the public ones, for tenants' systems under a private PKI.
DOWNSTREAM_CA_FILE = env("BUSBAR_DOWNSTREAM_CA_FILE", "")
# Retries: full-jitter exponential backoff from the base, capped; parked after the attempts or
# the budget (counted from the delivery's creation), whichever comes first.
DOWNSTREAM_RETRY_BASE_SECONDS = float(env("BUSBAR_DOWNSTREAM_RETRY_BASE_SECONDS", "5"))
DOWNSTREAM_RETRY_CAP_SECONDS = float(env("BUSBAR_DOWNSTREAM_RETRY_CAP_SECONDS", "3600"))
DOWNSTREAM_MAX_ATTEMPTS = envint("BUSBAR_DOWNSTREAM_MAX_ATTEMPTS", 20)
DOWNSTREAM_BUDGET_SECONDS = envint("BUSBAR_DOWNSTREAM_BUDGET_SECONDS", 72 * 3600)
# Circuit breaker per endpoint: opens after this many consecutive failures, probes after the pause.
DOWNSTREAM_CIRCUIT_THRESHOLD = envint("BUSBAR_DOWNSTREAM_CIRCUIT_THRESHOLD", 5)
DOWNSTREAM_CIRCUIT_PAUSE_SECONDS = envint("BUSBAR_DOWNSTREAM_CIRCUIT_PAUSE_SECONDS", 60)
# How long a rotated-out signing secret keeps signing beside the new one.
DOWNSTREAM_SECRET_OVERLAP_SECONDS = envint("BUSBAR_DOWNSTREAM_SECRET_OVERLAP_SECONDS", 24 * 3600)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.logging.RequestIdFilter"}},
    "formatters": {"json": {"()": "core.logging.JsonFormatter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env("BUSBAR_LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # WeasyPrint logs each layout step of a PDF summary at INFO; only its warnings matter.
        "weasyprint": {"level": "WARNING"},
        "fontTools": {"level": "WARNING"},
    },
}

SENTRY_DSN = env("SENTRY_DSN")
if SENTRY_DSN:
    import sentry_sdk

    sentry_sdk.init(
        dsn=SENTRY_DSN,
        environment=env("SENTRY_ENVIRONMENT", "production"),
        traces_sample_rate=float(env("SENTRY_TRACES_SAMPLE_RATE", "0") or 0),
        send_default_pii=False,
    )

# Serve static files straight from the source folders when collectstatic has not run (development
# and tests); production runs collectstatic into STATIC_ROOT and whitenoise serves that.
WHITENOISE_USE_FINDERS = envbool("BUSBAR_STATIC_FROM_SOURCE", True)
STATIC_ROOT = (
    None if WHITENOISE_USE_FINDERS else Path(env("BUSBAR_STATIC_ROOT", "/srv/busbar/static") or "")
)

# Proxies whose X-Forwarded-For is believed (CIDRs, e.g. "127.0.0.1/32,10.0.0.0/8"): the client
# address (throttling, audit) is the header's rightmost hop that is not one of these. Anything else
# connecting directly is its own client, whatever header it sends (core/clientaddr.py).
TRUSTED_PROXIES = envlist("BUSBAR_TRUSTED_PROXIES")
for _cidr in TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_cidr, strict=False)
    except ValueError as _exc:
        raise RuntimeError(f"BUSBAR_TRUSTED_PROXIES: {_cidr!r} is not an address or CIDR") from _exc

# Behind nginx (platform/nginx): trust its X-Forwarded-Proto and Host so that request URLs, which
# webhook signatures cover, are the https URLs the sender signed.
if envbool("BUSBAR_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True
    USE_X_FORWARDED_PORT = True

# Email (certificate expiry warnings and other notifications). Without EMAIL_HOST mail is written
# to the log, which suits development; production sets an SMTP relay.
DEFAULT_FROM_EMAIL = env("BUSBAR_FROM_EMAIL", "busbar@localhost")
if env("EMAIL_HOST"):
    MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {
                "host": env("EMAIL_HOST"),
                "port": envint("EMAIL_PORT", 587),
                "username": env("EMAIL_HOST_USER", ""),
                "password": env("EMAIL_HOST_PASSWORD", ""),
                "use_tls": envbool("EMAIL_USE_TLS", True),
            },
        }
    }
else:
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"}}

# DIP webhooks (messaging/inbound). The base URL is what the DIP is told to push to and what
# signatures are checked against: nginx's mutual-TLS server in production, the ingest server in
# development. Bodies above the limit get 413 before they are read whole; a signature date further
# than the skew from now is refused; the ingest server sheds load (503 + Retry-After) when more
# requests wait for the database than it has connections, or the unprocessed backlog is too deep.
BUSBAR_WEBHOOK_BASE_URL = env("BUSBAR_WEBHOOK_BASE_URL", "")
# The demo's stand-in for the DIP's certificate authority (dipsim's CA folder), so the console can
# tell a certificate admin how to get a CSR signed in the demo. Empty outside the demo.
BUSBAR_DEMO_DIPSIM_CA = env("BUSBAR_DEMO_DIPSIM_CA", "")
BUSBAR_WEBHOOK_MAX_BODY_BYTES = envint("BUSBAR_WEBHOOK_MAX_BODY_BYTES", 10 * 1024 * 1024)
BUSBAR_WEBHOOK_MAX_MESSAGES = envint("BUSBAR_WEBHOOK_MAX_MESSAGES", 5000)
BUSBAR_WEBHOOK_SKEW_SECONDS = envint("BUSBAR_WEBHOOK_SKEW_SECONDS", 300)
BUSBAR_INGEST_CONCURRENCY = envint("BUSBAR_INGEST_CONCURRENCY", 8)
BUSBAR_INGEST_QUEUE_LIMIT = envint("BUSBAR_INGEST_QUEUE_LIMIT", 64)
BUSBAR_INGEST_BACKLOG_LIMIT = envint("BUSBAR_INGEST_BACKLOG_LIMIT", 200_000)
BUSBAR_INGEST_RETRY_AFTER_SECONDS = envint("BUSBAR_INGEST_RETRY_AFTER_SECONDS", 5)
# Outbound: messages per second sent to the DIP per connection (normal sending and the drain
# after an outage alike); 0 switches the limit off.
BUSBAR_OUTBOUND_RATE_PER_SECOND = envint("BUSBAR_OUTBOUND_RATE_PER_SECOND", 400)
# Beat vacuums a table (as the owner) once this many of its row versions, and a tenth of it, are
# dead, and analyses it once as many changed since its last analysis (messaging.store.upkeep);
# BUSBAR_UPKEEP_SECONDS is how often it looks.
BUSBAR_UPKEEP_MIN_CHANGES = envint("BUSBAR_UPKEEP_MIN_CHANGES", 1000)
# A received DIP message claimed this many times without finishing is parked as an exception.
BUSBAR_INBOUND_MAX_ATTEMPTS = envint("BUSBAR_INBOUND_MAX_ATTEMPTS", 5)
# Inbound messages that wait (state "awaiting", an awaiting-dependency exception) until the
# message they follow for the same MPAN has arrived: interface -> the interface it follows.
BUSBAR_INBOUND_DEPENDENCIES: dict[str, tuple[str, ...]] = {"IF-036": ("IF-035",)}
