"""Test settings: the real settings, with fast password hashing and the test database's name."""

from __future__ import annotations

import hashlib
import os

from core.settings import *  # noqa: F403
from core.settings import BASE_DIR, DATABASES

# One test database per checkout, so two clones testing on one machine never drop each other's.
CHECKOUT_ID = hashlib.sha1(str(BASE_DIR).encode()).hexdigest()[:8]
TEST_DATABASE_NAME = os.environ.get("BUSBAR_TEST_DB_NAME", f"busbar_test_{CHECKOUT_ID}")
for alias in DATABASES.values():
    alias["NAME"] = TEST_DATABASE_NAME

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Throttling is tested explicitly; a low limit keeps that test short.
LOGIN_THROTTLE_ATTEMPTS = 3
