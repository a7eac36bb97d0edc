"""The one message store both directions share (DESIGN section 4).

Tables (migration ``messaging/0002_message_store``; models in ``messaging.models``), all tenant
tables under forced RLS with ``tenant_id`` leading every key:

- ``messaging_raw`` (``RawBlob``): exact bytes as received or sent, zstd-compressed, stored once.
  Kinds: ``delivery`` (a DIP webhook body), ``submission`` (a client's request), ``payload`` (final
  outbound bytes), ``status`` (a DIP status push). Insert-only for the runtime role.
- ``messaging_message`` (``Message``): one narrow row per DIP message, either direction. Its
  identity is written once (a trigger); the runtime role may update only the work columns
  (``state, attempts, lease_until, next_attempt_at, state_changed_at, swept_at, last_error``) and
  never deletes. Its exact bytes are a slice of a raw blob (``message_bytes``).
- ``messaging_transition`` (``Transition``): the append-only timeline.
- ``messaging_finding`` (``Finding``): validation findings per run (append-only).
- ``messaging_inbound_key`` (``InboundKey``): the inbound dedupe on the DIP transaction id.
- ``messaging_flow_rollup`` / ``messaging_state_count``: counters kept by every insert and
  transition (entries per state per hour; messages in each state now) so no page counts messages.

Ids are time-ordered (``busbar_next_id()``, ``messaging.store.ids``) and the large tables are
partitioned monthly by id range; ``ensure_partitions`` (a daily beat task) creates them ahead.

States and allowed transitions: ``messaging.store.states``. Writing: ``messaging.store.services``.
Re-enqueueing lost or due work: ``messaging.store.sweeper`` (pipelines register handlers).
Reading: ``messaging.store.selectors``.
"""
