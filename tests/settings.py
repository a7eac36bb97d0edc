"""Test settings: the real settings, with fast password hashing and the test database's name."""

from __future__ import annotations

import os

from core.settings import *  # noqa: F403
from core.settings import DATABASES

TEST_DATABASE_NAME = os.environ.get("BUSBAR_TEST_DB_NAME", "busbar_test")
for alias in DATABASES.values():
    alias["NAME"] = TEST_DATABASE_NAME

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Throttling is tested explicitly; a low limit keeps that test short.
LOGIN_THROTTLE_ATTEMPTS = 3
