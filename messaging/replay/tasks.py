"""Replay's background entry point: ids in, one service."""

from __future__ import annotations

from celery import shared_task

from messaging.replay import services


@shared_task(name="messaging.tasks.execute_replay_task", acks_late=True)
def execute_replay_task(tenant_id: str, replay_id: int) -> str:
    """Run an approved replay (idempotent: a finished one is left as it is)."""
    replay = services.execute_replay(tenant_id=tenant_id, replay_id=replay_id)
    return replay.state if replay else "missing"
