"""The send path's plumbing against a real dipsim over mutual TLS: one pooled client per connection
and credential set (replaced on rotation), and exchange evidence that no rollback can erase."""

from __future__ import annotations

import httpx
import pytest
from django.db import transaction

from core.tenancy import tenant_context
from messaging import credentials
from messaging.dip import DipTransportError
from messaging.models import DipExchange
from tenants import certificates
from tests.messaging.test_credentials import fingerprint, issue, sds_connection
from tests.messaging.test_dip_client import if021


class Rollback(Exception):
    """Raised to roll the caller's transaction back."""


@pytest.fixture
def pool():
    pool = credentials.DIP_CLIENTS
    pool.clear()
    yield pool
    pool.clear()


def test_one_pooled_client_serves_a_connection_until_its_certificate_is_rotated(
    committed_world, dipsim, tmp_path, pool
):
    world = committed_world
    connection = sds_connection(world.globex.id, dipsim)
    with tenant_context(world.globex.id):
        first = pool.get(connection=connection)
        assert pool.get(connection=connection) is first
        result = credentials.submit_batch(
            connection=connection, interface_id="IF-021", messages=[if021()]
        )
        assert result.status == 201
        assert pool.get(connection=connection) is first
        assert len(pool) == 1

        # A rotation in this process drops the client at once.
        candidate = certificates.import_certificate(
            connection=connection,
            purpose="signing",
            data=issue(dipsim, tmp_path / "next", kind="signing"),
            actor="pytest",
        )
        active = credentials.rotate_certificate(certificate_id=str(candidate.id), actor="alice")
        assert active is not None
        second = pool.get(connection=connection)
        assert second is not first
        assert second.signing_certificate_fingerprint == active.fingerprint_sha256
        result = credentials.submit_batch(
            connection=connection, interface_id="IF-021", messages=[if021()]
        )
        assert (result.status, result.signing_certificate_fingerprint) == (
            201,
            active.fingerprint_sha256,
        )


def test_a_rotation_made_elsewhere_is_noticed_by_the_fingerprints(
    committed_world, dipsim, tmp_path, pool
):
    """Another process rotated the mTLS certificate: this pool was not told, yet the next batch
    goes out with the new certificate because the fingerprints no longer match."""
    world = committed_world
    connection = sds_connection(world.globex.id, dipsim)
    with tenant_context(world.globex.id):
        first = pool.get(connection=connection)
        candidate = certificates.import_certificate(
            connection=connection,
            purpose="mtls",
            data=issue(dipsim, tmp_path / "mtls", kind="mtls"),
            actor="pytest",
        )
        # The certificate service itself, as the maintenance worker would call it.
        certificates.rotate_certificate(
            certificate=candidate,
            canary=credentials.dip_canary,
            actor="pytest",
        )
        second = pool.get(connection=connection)
        assert second is not first
        assert second.mtls_certificate_fingerprint == candidate.fingerprint_sha256
        result = credentials.submit_batch(
            connection=connection, interface_id="IF-021", messages=[if021()]
        )
    assert result.status == 201
    assert result.mtls_certificate_fingerprint == candidate.fingerprint_sha256


def test_the_evidence_of_a_request_survives_a_rollback_of_the_caller(committed_world, dipsim, pool):
    world = committed_world
    connection = sds_connection(world.globex.id, dipsim)
    message = if021()
    reference = message["CommonBlock"]["S1"]["senderUniqueReference"]
    results = []

    def send_then_fail() -> None:
        with tenant_context(world.globex.id), transaction.atomic():
            results.append(
                credentials.submit_batch(
                    connection=connection, interface_id="IF-021", messages=[message]
                )
            )
            raise Rollback

    with pytest.raises(Rollback):
        send_then_fail()
    [result] = results
    assert result.status == 201
    with tenant_context(world.globex.id):
        [exchange] = DipExchange.objects.filter(sender_references__contains=[reference])
    assert exchange.http_status == 201
    assert exchange.signing_certificate_fingerprint == fingerprint(
        dipsim.sds.sign_cert.read_bytes()
    )
    assert exchange.transaction_ids == [result.outcomes[0].transaction_id]


def test_a_request_whose_answer_was_lost_is_evidenced_even_when_the_caller_rolls_back(
    committed_world, dipsim, pool
):
    world = committed_world
    connection = sds_connection(world.globex.id, dipsim)
    rule = {"kind": "drop_after_accept", "channel": "IF-021", "remaining": 1}
    assert httpx.post(f"{dipsim.admin_url}/admin/faults", json=rule).status_code == 201
    message = if021()
    reference = message["CommonBlock"]["S1"]["senderUniqueReference"]
    with (
        pytest.raises(DipTransportError) as caught,
        tenant_context(world.globex.id),
        transaction.atomic(),
    ):
        credentials.submit_batch(connection=connection, interface_id="IF-021", messages=[message])
    assert caught.value.maybe_delivered
    with tenant_context(world.globex.id):
        [exchange] = DipExchange.objects.filter(sender_references__contains=[reference])
    assert (exchange.outcome, exchange.http_status) == ("maybe_delivered", None)
    assert exchange.error.startswith("connection_dropped")


def test_evidence_is_written_for_the_callers_tenant_only(committed_world, dipsim, pool):
    world = committed_world
    connection = sds_connection(world.globex.id, dipsim)
    with tenant_context(world.globex.id):
        credentials.submit_batch(connection=connection, interface_id="IF-021", messages=[if021()])
    with tenant_context(world.acme.id):
        assert not DipExchange.objects.exists()
    with tenant_context(world.globex.id):
        assert DipExchange.objects.count() == 1
