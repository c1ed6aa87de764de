"""N-of-M signers, pure: can `count` slots of a quorum be filled by distinct signers?

A rule's `require: {count: N, signers: [set, set, ...]}` names M slots, each a signer set
(Policy.signer_sets; a set may be named twice: `[builders, builders]` needs two distinct
builders). A slot is filled by a signer that matches any pattern of its set; one signer
fills at most one slot, and signers that share a distinctness key (the caller's choice —
the decision core passes the SHA-256 of the signer's public key, so two certificates for
one key count once) are one signer. The quorum holds when a maximum bipartite matching
slots ↔ signers fills at least N slots.

If the rule also has inline `signers:` patterns, the caller passes only the signers that
match them: every quorum signer must then also match the rule's `signers`.
"""

from __future__ import annotations

from sifguard.policy.model import MAX_QUORUM_SLOTS, Policy, Quorum, SignerPattern

MAX_SIGNERS = 64


def slot_patterns(policy: Policy, quorum: Quorum) -> list[tuple[SignerPattern, ...]]:
    """The patterns of each slot, in slot order. A slot naming no set of the policy (only a
    hand-built Policy can) gets no patterns: nobody fills it."""
    return [policy.signer_set(name) or () for name in quorum.slots]


def satisfy(slot_patterns: list[tuple[SignerPattern, ...]], signers: list, count: int, matches, *,
            key) -> tuple[bool, list[tuple[int, int]]]:
    """(holds, assignment): whether >= `count` slots can be filled by distinct signers.

    `matches(pattern, signer) -> bool` is the caller's (the decision core: a closure over
    policy.decide.signer_matches); `key(signer)` is the signer's distinctness key (hashable;
    required — there is no default, so forgetting it cannot count one key twice).

    The assignment is a maximum matching as (slot index, signer index) pairs sorted by slot;
    it may fill more than `count` slots. Each distinct key appears at most once, as the
    earliest of its signers that matches that slot. Deterministic: slots are augmented in
    order, each taking the earliest free matching signer (by the first index of its key) and
    only then moving an earlier slot's signer along an augmenting path, so earlier signers
    are preferred. Bounded: only the first MAX_SIGNERS (64) signers are considered — later ones
    are ignored, which can only make the quorum harder to meet; more than MAX_QUORUM_SLOTS
    (16) slots, or a count below 1, is never satisfied (the loader refuses both).
    """
    if count < 1 or len(slot_patterns) > MAX_QUORUM_SLOTS:
        return False, []
    signers = list(signers)[:MAX_SIGNERS]
    first: dict = {}                     # key → index of the key's first signer
    members: list[list[int]] = []        # per distinct key (in first-seen order): its signer indexes
    for i, s in enumerate(signers):
        k = key(s)
        if k not in first:
            first[k] = len(members)
            members.append([])
        members[first[k]].append(i)
    # edge[slot][node] = the earliest signer of key-node `node` that fills `slot`, or absent
    edge: list[dict[int, int]] = []
    for pats in slot_patterns:
        e = {}
        for node, idxs in enumerate(members):
            hit = next((i for i in idxs if any(matches(p, signers[i]) for p in pats)), None)
            if hit is not None:
                e[node] = hit
        edge.append(e)
    owner: dict[int, int] = {}           # key-node → slot it fills

    def augment(slot: int, seen: set) -> bool:
        """Kuhn's augmenting path; a free signer first, then one whose slot can move on
        (dicts keep insertion order: key nodes in signer order)."""
        for node in edge[slot]:
            if node not in owner and node not in seen:
                seen.add(node)
                owner[node] = slot
                return True
        for node in edge[slot]:
            if node in seen:
                continue
            seen.add(node)
            if augment(owner[node], seen):
                owner[node] = slot
                return True
        return False

    for slot in range(len(slot_patterns)):
        augment(slot, set())
    assignment = sorted((slot, edge[slot][node]) for node, slot in owner.items())
    return len(assignment) >= count, assignment
