"""Merkle roots and inclusion proofs for every leaf at once (RFC 6962 section 2.1).

The hashing primitives live in ``verify_pack`` so that the sealer and the standalone verifier
shipped in every pack cannot disagree.
"""

from __future__ import annotations

from messaging.evidence.verify_pack import merkle_root, node_hash


def root_and_proofs(leaves: list[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The tree's root and, for each leaf in order, its audit path (PATH(m, D[n]))."""
    if len(leaves) <= 1:
        return merkle_root(leaves), [[] for _ in leaves]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    left_root, left_proofs = root_and_proofs(leaves[:split])
    right_root, right_proofs = root_and_proofs(leaves[split:])
    proofs = [[*p, right_root] for p in left_proofs] + [[*p, left_root] for p in right_proofs]
    return node_hash(left_root, right_root), proofs
