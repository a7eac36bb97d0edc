"""This checkout's share of Redis: its Celery queues and a cache whose ``clear()`` stays in it.

Every key a test run writes carries ``settings.REDIS_KEY_PREFIX`` (``test_<checkout id>:``, set in
tests/settings.py), so two checkouts testing at once on one Redis never see each other's keys::

    from tests.redis_keys import purge_queue, queue_length

    purge_queue("maintenance")
    ...
    assert queue_length("maintenance") == 2

Never ``flushdb()`` or delete an unprefixed key in a test: another checkout may be using it.
"""

from __future__ import annotations

import redis
from django.conf import settings
from django.core.cache.backends.redis import RedisCache


def broker() -> redis.Redis:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def queue_key(name: str) -> str:
    """The Redis list that holds Celery queue ``name`` for this checkout."""
    return settings.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] + name


def queue_length(name: str) -> int:
    return int(broker().llen(queue_key(name)))


def purge_queue(name: str) -> None:
    broker().delete(queue_key(name))


def delete_prefixed(client: redis.Redis, prefix: str) -> int:
    """Delete every key starting with ``prefix``; return how many there were."""
    if not prefix:
        raise ValueError("refusing to delete every key: give a prefix")
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    return len(keys)


class CheckoutRedisCache(RedisCache):
    """Django's Redis cache, except that ``clear()`` deletes this cache's own keys (its
    ``KEY_PREFIX``) instead of flushing the whole Redis database."""

    def clear(self) -> None:
        delete_prefixed(self._cache.get_client(write=True), f"{self.key_prefix}:")
