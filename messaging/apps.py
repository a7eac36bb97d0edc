from __future__ import annotations

from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "messaging"
    verbose_name = "Messaging"

    def ready(self) -> None:
        from prometheus_client import REGISTRY

        from messaging.metrics import MessageFlowCollector

        # ready() can run twice (tests, autoreload); a second registration would raise.
        if not any(isinstance(c, MessageFlowCollector) for c in REGISTRY._collector_to_names):
            REGISTRY.register(MessageFlowCollector())
