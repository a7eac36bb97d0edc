"""Replay and requeue: sending messages again on purpose, with checks first and, in production,
a second person's approval. Inbound replay redelivers the normalised events downstream with their
original event ids (an idempotent receiver sees no second effect); outbound replay resends to the
DIP. A replay can also ask the DIP to ``/replay`` or ``/requeue`` a window of a channel."""
