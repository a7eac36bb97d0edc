"""A sample client system: receives Busbar's signed webhooks the way a tenant's own system would.

It shares no code with Busbar (it imports nothing of it): signatures are verified with the
``standardwebhooks`` package, deliveries are deduplicated on ``webhook-id`` and kept in SQLite,
and ``/`` shows counts. ``python -m sampleclient --help`` lists the options.
"""
