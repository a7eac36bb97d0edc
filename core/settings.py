"""Busbar settings, driven by the environment.

Integrations switch on when their variable is set (SENTRY_DSN). Secrets may be given directly or as
``NAME_FILE`` pointing at a file. The development launcher (``scripts/devenv.py``) sets every
variable below for local runs; production sets them in its service manager.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import overload

from psycopg.conninfo import conninfo_to_dict

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
    options: dict = {}
    if pool:
        # Django's built-in psycopg pool: tenant settings are transaction-local (set_config(..., true)),
        # so a pooled connection never carries one tenant's context into another's request.
        options["pool"] = {
            "min_size": 1,
            "max_size": envint("BUSBAR_DB_POOL_SIZE", 10),
            "timeout": 10,
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
SECRET_KEY = env("DJANGO_SECRET_KEY") or ("insecure-development-key" if DEBUG else None)
if not SECRET_KEY:
    raise RuntimeError("DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) must be set")
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
    "whitenoise.middleware.WhiteNoiseMiddleware",
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
LOGIN_REDIRECT_URL = "console:home"
LOGOUT_REDIRECT_URL = "console:login"
# Failed logins per username and per source address within the window before refusing more.
LOGIN_THROTTLE_ATTEMPTS = envint("BUSBAR_LOGIN_THROTTLE_ATTEMPTS", 5)
LOGIN_THROTTLE_WINDOW_SECONDS = envint("BUSBAR_LOGIN_THROTTLE_WINDOW_SECONDS", 900)

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = envbool("BUSBAR_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_AGE = envint("BUSBAR_SESSION_SECONDS", 8 * 3600)
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

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
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "busbar",
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
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT * 4}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "maintenance"
# One queue per family, each served by its own worker pool, so one cannot starve another.
CELERY_TASK_ROUTES = {
    "core.tasks.*": {"queue": "maintenance"},
    "tenants.tasks.*": {"queue": "maintenance"},
    "messaging.tasks.rotate_certificate_task": {"queue": "maintenance"},
    "messaging.tasks.inbound.*": {"queue": "inbound"},
    "messaging.tasks.outbound.*": {"queue": "outbound"},
    "messaging.tasks.delivery.*": {"queue": "delivery"},
}
CELERY_BEAT_SCHEDULE: dict = {
    "heartbeat": {"task": "core.tasks.record_heartbeat_task", "schedule": 30.0},
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
    "loggers": {"django.db.backends": {"level": "WARNING"}},
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
