"""Busbar's core: settings, tenancy, crypto, audit, health. Imports nothing from the apps."""

from __future__ import annotations

from core.celery import app as celery_app

__all__ = ("celery_app",)
