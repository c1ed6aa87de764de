"""Verification levels, pure: a rule's `verification` → one action per check.

After notation's trust policy. Each check is enforced (its failure refuses the image),
logged (its failure is recorded in the verdict and the audit log, the image allowed) or
skipped (not performed):

    level       integrity  authenticity  expiry  revocation
    strict      enforce    enforce       enforce enforce       (the default: what sifguard always did)
    permissive  enforce    enforce       log     log
    audit       enforce    log           log     log
    skip        skip       skip          skip    skip

`override` replaces the level's action for single checks. The loader refuses what makes
no sense (integrity overridden, overrides with level skip, unknown checks or actions); a
hand-built Verification that breaks those rules is read fail-closed here: an unknown level
counts as strict, an unknown or integrity override is ignored, an unknown action enforces.
"""

from __future__ import annotations

from sifguard.policy.model import CHECK_ACTIONS, CHECKS, LEVELS, Verification

LEVEL_ACTIONS: dict[str, dict[str, str]] = {
    "strict": dict.fromkeys(CHECKS, "enforce"),
    "permissive": {"integrity": "enforce", "authenticity": "enforce", "expiry": "log", "revocation": "log"},
    "audit": {"integrity": "enforce", "authenticity": "log", "expiry": "log", "revocation": "log"},
    "skip": dict.fromkeys(CHECKS, "skip"),
}
assert tuple(LEVEL_ACTIONS) == LEVELS
FIXED = ("integrity",)      # checks no override may change (only level skip skips integrity)


def actions(v: Verification) -> dict[str, str]:
    """Each of CHECKS → enforce | log | skip, in CHECKS order (a new dict each call)."""
    out = dict(LEVEL_ACTIONS.get(v.level, LEVEL_ACTIONS["strict"]))
    if v.level == "skip":
        return out                       # the loader refuses overrides with level skip
    for check, action in v.overrides:
        if check in out and check not in FIXED:
            out[check] = action if action in CHECK_ACTIONS else "enforce"
    return out


def describe(v: Verification) -> str:
    """One line for `policy check`: level, effective actions, timestamp requirement."""
    a = actions(v)
    given = dict(v.overrides)
    parts = ", ".join(f"{c} {a[c]}" + ("*" if c in given else "") for c in CHECKS)
    return f"{v.level} ({parts}), timestamp {v.timestamp}"
