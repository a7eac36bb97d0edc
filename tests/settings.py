"""Test settings: the real settings, with fast password hashing and the test database's name."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# One test database and one Redis key prefix (cache and Celery queues) per checkout, so two clones
# testing on one machine never drop, flush or consume each other's. Derive anything else a test
# run holds on the machine (files under var/, names) from CHECKOUT_ID too; ports are picked free.
CHECKOUT_ID = hashlib.sha1(str(Path(__file__).resolve().parent.parent).encode()).hexdigest()[:8]
os.environ.setdefault("BUSBAR_REDIS_PREFIX", f"test_{CHECKOUT_ID}:")

from core.settings import *  # noqa: E402, F403
from core.settings import BASE_DIR, CACHES, DATABASES  # noqa: E402

assert hashlib.sha1(str(BASE_DIR).encode()).hexdigest()[:8] == CHECKOUT_ID
TEST_DATABASE_NAME = os.environ.get("BUSBAR_TEST_DB_NAME", f"busbar_test_{CHECKOUT_ID}")
for alias in DATABASES.values():
    alias["NAME"] = TEST_DATABASE_NAME
# cache.clear() deletes this checkout's keys only, where Django's would flush the whole database.
CACHES["default"]["BACKEND"] = "tests.redis_keys.CheckoutRedisCache"

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Throttling is tested explicitly; a low limit keeps that test short.
LOGIN_THROTTLE_ATTEMPTS = 3
