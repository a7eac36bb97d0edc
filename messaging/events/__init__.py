"""Normalised events and their delivery to the tenant's own systems.

Entry points for the other pipelines (each enters the tenant context itself):

- ``services.record_events(*, tenant_id, messages) -> list[int]``: after validation, the inbound
  pipeline passes ``[(messaging_message id, payload dict), ...]``; each message goes through the
  newest mapping for its interface (``mappings``), the events are stored with their lineage
  (source message id, mapping name and version), and every enabled endpoint subscribed to an
  event's type is owed it; delivery is enqueued when the transaction commits. Idempotent (event
  ids derive from message, mapping and version). Raises ``EventMappingError`` naming each message
  that cannot be mapped, and then writes nothing.
- ``services.publish_event(*, tenant_id, type, payload, subject="", source="", dedupe_key="")
  -> int``: Busbar's own events (``outbound.state_changed`` for the outbound pipeline), through
  the same feed and signed webhooks.
- ``services.rederive_events(*, tenant_id, messages, version=None) -> list[int]``: the same
  messages through a newer mapping; new events ``supersedes`` the previous generation's.
  ``services.rederive_stored_messages(*, tenant_id, message_ids, version=None)`` does it for
  messages in the store, reading their exact raw bytes.

Delivery closes the message's own loop: once every endpoint owed a message's events has them,
the message moves ``normalised -> delivered`` on its timeline (actor ``delivery``).

Reading: ``selectors.list_events_after(cursor=..., limit=...)`` is the cursor-ordered feed behind
``GET /api/v1/events/``; ``selectors.event_envelope(event)`` is the JSON a consumer receives.

Delivery (``delivery``, tasks on the ``delivery`` queue): Standard Webhooks signatures
(``signing``), at-least-once with database-scheduled retries, a circuit breaker per endpoint, a
log of every attempt, parking after the budget, one task per tenant; ``sweep_deliveries_task``
(beat) re-enqueues what is due. Endpoints (``tenants.models.DownstreamEndpoint``) are managed
through ``endpoints``; their URLs pass ``core.netguard``'s address check when saved and again
before each request.
"""
