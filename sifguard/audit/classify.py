"""Why a decision refused (or, for `audit`, would have): a bounded set of classes.

Structured fields first: a verdict written since issue 10 carries `checks` — the first
check that failed names the class (integrity → unsigned or tampered, authenticity →
untrusted signer or a signer the rule does not allow, expiry → expired, revocation →
revoked or unavailable, told apart by the revocation answers' `status`). Records without
checks (hook events: unreadable operands, refused command lines; lines from older
versions) are classified from the engine's and hooks' fixed wordings, after removing what
a user chose (the image path the reason starts with, `…`-quoted command text), so a file
named `is revoked.sif` cannot pick its own class."""

from __future__ import annotations

import re

CLASSES = ("unsigned", "untrusted-signer", "tampered", "revoked", "expired", "revocation-unavailable",
           "signer-not-allowed", "unreadable", "runtime-refused", "other")

LABELS = {
    "unsigned": "unsigned",
    "untrusted-signer": "untrusted signer",
    "tampered": "tampered",
    "revoked": "revoked",
    "expired": "expired / no counting time-stamp",
    "revocation-unavailable": "revocation unavailable",
    "signer-not-allowed": "rule does not allow signer",
    "unreadable": "not a SIF / unreadable",
    "runtime-refused": "runtime / argv refused",
    "other": "other",
}

CHECK_ORDER = ("integrity", "authenticity", "expiry", "timestamp", "revocation")

_UNSIGNED = re.compile(r"is not signed|has no signed content|is not in any object group|carries only .* signatures")
_NOT_ALLOWED = re.compile(r"which rule '.*' does not allow|is not allowed by rule '|needs \d+ distinct signers")
_UNAVAILABLE = re.compile(r"could not be established|unknown to its responder|revocation status of")

# text-only fallbacks, most specific first (applied to the reason with user-chosen parts removed)
_TEXT = (
    ("runtime-refused", re.compile(
        r"command line not understood|is not allowed on this cluster|without an image operand|"
        r"runs the container runtime directly|executed directly|executes a SIF image directly|"
        r"reaches the container runtime|runtime\.direct|image source '[^']*' is not allowed|"
        r"sealed in-memory copy|cannot seal a copy|sealed copy of the image|shrank while it was being copied")),
    ("unsigned", _UNSIGNED),
    ("revoked", re.compile(r" is revoked: |\brevoked\b.*\((keyCompromise|cACompromise|aACompromise|unspecified)")),
    ("revocation-unavailable", _UNAVAILABLE),
    ("signer-not-allowed", _NOT_ALLOWED),
    ("expired", re.compile(r"\bexpired\b|not yet valid|requires a time-stamp")),
    ("tampered", re.compile(r"changed|integrity compromised|does not verify with|invalid hash type|digest")),
    ("untrusted-signer", re.compile(r"no trusted signature|does not chain to a trusted root|not made by a "
                                    r"trusted|signed by a key that was not given|untrusted")),
    ("unreadable", re.compile(r"no such file|not a regular file|a directory|cannot read|not a SIF|truncated|"
                              r"SIF version|descriptor|data section|not at its path|unreadable|permission denied",
                              re.I)),
)


def _user_free(record: dict, reason: str) -> str:
    """The reason without the parts a user chose: the operand/image it starts with and any
    `quoted` command text."""
    for k in ("operand", "image"):
        v = record.get(k)
        if isinstance(v, str) and v and reason.startswith(v + ": "):
            reason = reason[len(v) + 2:]
            break
    reason = re.sub(r"`[^`]*`", "``", reason)
    if reason.startswith("/"):          # a path we could not match to a field: drop up to ': '
        head, sep, tail = reason.partition(": ")
        if sep and " " not in head:
            reason = tail
    return reason


def classify(record: dict) -> str:
    """One of CLASSES for a refusing (or auditing) record."""
    reason = record.get("reason")
    reason = reason if isinstance(reason, str) else ""
    checks = record.get("checks")
    if isinstance(checks, dict):
        failed = [c for c in CHECK_ORDER if isinstance(checks.get(c), dict) and checks[c].get("result") == "fail"]
        enforced = [c for c in failed if checks[c].get("action") == "enforce"]
        check = (enforced or failed or [None])[0]
        why = checks[check].get("reason") if check else ""
        why = why if isinstance(why, str) else ""
        if check == "integrity":
            return "unsigned" if _UNSIGNED.search(why) else "tampered"
        if check == "authenticity":
            return "signer-not-allowed" if _NOT_ALLOWED.search(why) else "untrusted-signer"
        if check in ("expiry", "timestamp"):
            return "expired"
        if check == "revocation":
            answers = record.get("revocation")
            statuses = {a["status"] for a in answers if isinstance(a, dict) and isinstance(a.get("status"), str)} \
                if isinstance(answers, list) else set()
            if "revoked" in statuses:
                return "revoked"
            if statuses & {"unknown", "error"}:
                return "revocation-unavailable"
            if "revocation not asked" in why:
                return "untrusted-signer"
            return "revoked" if " is revoked: " in why else "revocation-unavailable"
    text = _user_free(record, reason)
    for cls, pattern in _TEXT:
        if pattern.search(text):
            return cls
    return "other"
