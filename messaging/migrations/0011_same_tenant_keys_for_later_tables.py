"""The tables added after 0003 (events and their deliveries, the exception queue, the outbound
circuit breaker) point only at rows of their own tenant: each plain foreign key is checked past
row-level security (see core.db's TenantForeignKey), so it accepted another tenant's connection,
endpoint, event or delivery id."""

from __future__ import annotations

from django.db import migrations

from core.db import TenantForeignKey


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0010_outbound_connection_breaker"),
        ("tenants", "0013_downstream_same_tenant_keys"),
    ]

    operations = [
        TenantForeignKey("messaging_connectionbreaker", "connection_id", "tenants_connection"),
        TenantForeignKey("messaging_exception", "connection_id", "tenants_connection"),
        TenantForeignKey("messaging_event", "supersedes_id", "messaging_event"),
        TenantForeignKey("messaging_delivery", "event_id", "messaging_event"),
        TenantForeignKey("messaging_delivery", "endpoint_id", "tenants_downstreamendpoint"),
        TenantForeignKey("messaging_deliveryattempt", "delivery_id", "messaging_delivery"),
        TenantForeignKey("messaging_deliveryattempt", "endpoint_id", "tenants_downstreamendpoint"),
    ]
