"""The demo's sample client systems are registered as the demo tenants' endpoints, idempotently."""

from __future__ import annotations

import json

from django.core.management import call_command

from core.tenancy import tenant_context
from messaging.events import endpoints
from messaging.events.signing import generate_secret
from tenants.management.commands.seed_demo import demo_tenant_id
from tenants.models import DownstreamEndpoint


def test_each_demo_tenant_gets_its_sample_client_as_an_endpoint(db, settings, tmp_path):
    call_command("seed_demo")
    settings.BUSBAR_DOWNSTREAM_ALLOW = "127.0.0.1:8701,127.0.0.1:8702,127.0.0.1:9701"
    secrets = {"acme": generate_secret(), "globex": generate_secret()}
    config = tmp_path / "sampleclients.json"

    def seed(ports: dict[str, int], secrets: dict[str, str]) -> None:
        config.write_text(
            json.dumps(
                {
                    slug: {"url": f"http://127.0.0.1:{port}/hooks", "secret": secrets[slug]}
                    for slug, port in ports.items()
                }
            )
        )
        call_command("seed_sample_clients", str(config))

    seed({"acme": 8701, "globex": 8702}, secrets)
    with tenant_context(demo_tenant_id("acme")):
        [acme] = DownstreamEndpoint.objects.all()
        assert (acme.url, acme.event_types, acme.enabled) == (
            "http://127.0.0.1:8701/hooks",
            ["*"],
            True,
        )
        assert endpoints.signing_secrets(endpoint_id=acme.id) == [secrets["acme"]]
        assert acme.events_per_request == 50  # the demo's sample clients take batches
    # A second run on another port, with a new secret for acme: updated in place.
    renewed = {**secrets, "acme": generate_secret()}
    seed({"acme": 9701, "globex": 8702}, renewed)
    with tenant_context(demo_tenant_id("acme")):
        [acme] = DownstreamEndpoint.objects.all()
        assert acme.url == "http://127.0.0.1:9701/hooks"
        assert endpoints.signing_secrets(endpoint_id=acme.id) == [renewed["acme"]]
    with tenant_context(demo_tenant_id("globex")):
        [globex] = DownstreamEndpoint.objects.all()
        assert endpoints.signing_secrets(endpoint_id=globex.id) == [secrets["globex"]]
