"""Register each demo tenant's sample client system as its downstream endpoint.

``make run``'s launcher starts one sample client per demo tenant (``python -m sampleclient``) on a
free loopback port, allows exactly those addresses (``BUSBAR_DOWNSTREAM_ALLOW``), and runs this
after ``seed_demo`` with a JSON file ``{slug: {"url": ..., "secret": "whsec_..."}}``. Idempotent:
the URL is brought up to date (the port changes each run), a disabled endpoint is enabled again,
and a secret the launcher no longer holds is replaced at once. It lives in ``messaging`` rather
than beside ``seed_demo`` because endpoints are managed by messaging's services, which the
``tenants`` app may not import.
"""

from __future__ import annotations

import json
from argparse import ArgumentParser
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from core.tenancy import tenant_context
from messaging.events import endpoints as downstream
from tenants.management.commands.seed_demo import demo_tenant_id
from tenants.models import DownstreamEndpoint

SAMPLE_CLIENT = "Sample client system"


DEMO_EVENTS_PER_REQUEST = 50


class Command(BaseCommand):
    help = "Register the demo tenants' sample client systems as their downstream endpoints."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("config", type=Path, help="JSON {slug: {url, secret}}")

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        try:
            clients: dict[str, dict[str, str]] = json.loads(options["config"].read_text())
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read {options['config']}: {exc}") from exc
        for slug, client in clients.items():
            with tenant_context(demo_tenant_id(slug)):
                self._register(slug, client["url"], client["secret"])

    def _register(self, slug: str, url: str, secret: str) -> None:
        endpoint = DownstreamEndpoint.objects.filter(name=SAMPLE_CLIENT).first()
        if endpoint is None:
            # The sample client takes batches, as a busy tenant's system would (README, Events).
            downstream.create_endpoint(
                name=SAMPLE_CLIENT,
                url=url,
                event_types=["*"],
                actor="seed",
                secret=secret,
                events_per_request=DEMO_EVENTS_PER_REQUEST,
            )
            self.stdout.write(f"registered the sample client system of {slug} at {url}")
            return
        if endpoint.url != url:
            downstream.update_endpoint(endpoint=endpoint, url=url, event_types=["*"], actor="seed")
        if not endpoint.enabled:
            downstream.set_endpoint_enabled(endpoint=endpoint, enabled=True, actor="seed")
        if secret not in downstream.signing_secrets(endpoint_id=endpoint.id):
            downstream.rotate_endpoint_secret(
                endpoint=endpoint, actor="seed", overlap=timedelta(0), secret=secret
            )
        self.stdout.write(f"the sample client system of {slug} is at {url}")
