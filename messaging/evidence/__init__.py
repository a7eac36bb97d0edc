"""Evidence: a tamper-evident ledger of everything that happened to a tenant's messages, and signed
assurance packs anyone can verify offline (DESIGN section 5).

- ``ledger``: every few seconds, per tenant, the entries of one settled time window (raw blobs as
  received or sent, state transitions, DIP exchanges, audit events) are hashed into a Merkle tree
  (RFC 6962 hashing) whose root is signed with Busbar's evidence key and chained to the previous
  seal. Receipt never waits for it: the sealer reads what was committed before the window closed.
  ``verify_ledger`` recomputes every entry from its source and alerts on any difference.
- ``packs``: a ZIP for a tenant and a period: manifest with file hashes, messages, timeline,
  findings, exchanges, audit, certificates, seals, entries with inclusion proofs, an HTML summary,
  the verifier script and a detached signature over the manifest.
- ``verify_pack``: the standalone verifier shipped in every pack (stdlib + cryptography).
"""
