"""The one Celery app. Tasks carry row ids; PostgreSQL holds the truth (DESIGN section 4)."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")

app = Celery("busbar", task_cls="celery.contrib.django.task:DjangoTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_postrun.connect
def return_connections_to_the_pool(task: Any = None, **_: Any) -> None:
    """After each task its database connection goes back to Django's pool, reset there (DISCARD
    ALL) for the next task, as after a web request; the pool itself is kept (settings:
    CELERY_DB_REUSE_MAX). A task run eagerly is inside its caller's transaction: left alone."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()
