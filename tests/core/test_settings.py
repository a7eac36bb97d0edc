"""Integrations switch on when their variable is set, and only then."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = (
    "import django, sentry_sdk; django.setup(); "
    "print(sentry_sdk.get_client().is_active(), sentry_sdk.get_client().options['send_default_pii'])"
)


def settings_probe(**extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "SENTRY_DSN"}
    env.update(DJANGO_SETTINGS_MODULE="core.settings", **extra)
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_sentry_is_off_without_a_dsn():
    assert settings_probe().startswith("False")


def test_sentry_starts_with_a_dsn_and_sends_no_personal_data():
    assert settings_probe(SENTRY_DSN="http://public@127.0.0.1:9/1") == "True False"


def test_settings_refuse_to_start_without_a_secret_key():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}
    env.update(DJANGO_SETTINGS_MODULE="core.settings", DJANGO_DEBUG="false")
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_debug_has_no_fallback_secret_key_either():
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DJANGO_SECRET_KEY", "DJANGO_SECRET_KEY_FILE"}
    }
    env.update(DJANGO_SETTINGS_MODULE="core.settings", DJANGO_DEBUG="true")
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def https_probe(**extra: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"BUSBAR_HTTPS", "DJANGO_DEBUG"}}
    env.update(DJANGO_SETTINGS_MODULE="core.settings", **extra)
    probe = (
        "from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS > 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {probe}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


def test_over_https_cookies_are_secure_and_hsts_is_on():
    assert https_probe() == ["True", "True", "True"]  # production's default
    assert https_probe(BUSBAR_HTTPS="true") == ["True", "True", "True"]
    assert https_probe(BUSBAR_HTTPS="false") == ["False", "False", "False"]


def test_a_bad_trusted_proxy_setting_stops_startup():
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="core.settings", BUSBAR_TRUSTED_PROXIES="nginx")
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "BUSBAR_TRUSTED_PROXIES" in result.stderr
