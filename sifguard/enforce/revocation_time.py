"""Revocation answers weighed against the signing time (pure).

A `revoked` answer refuses — unless the signature carries a time-stamp that counts and the
revocation cannot touch it (`revocation_spares`): a benign reason (affiliationChanged,
superseded, cessationOfOperation, certificateHold, privilegeWithdrawn) dated — invalidityDate
included, when given — after the latest instant the token allows (genTime + accuracy).
keyCompromise, cACompromise, aACompromise, unspecified or no reason refuse whatever the
time: they date the key's misuse to no known instant. The TSA's own certificates are asked
about too, by the same rule: a revocation that reaches the token, or a status that is
unknown (or unreachable outside soft-fail), voids it, and the signer is judged at now.
"""

from __future__ import annotations

import datetime as dt

# The reasons that may spare a time-stamped signature: an allow-list, so that a reason spelt
# another way (cryptography's ReasonFlags names or members), removeFromCRL or a reason this
# code does not know refuses like a compromise instead of sparing.
BENIGN_REASONS = frozenset({"affiliationChanged", "superseded", "cessationOfOperation", "certificateHold",
                            "privilegeWithdrawn"})


def reason_name(reason) -> str | None:
    """RFC 5280 camelCase name of a revocation reason given as that name, a cryptography
    ReasonFlags member or its member name (key_compromise); None when it is none of them."""
    from cryptography import x509
    known = {f.name: f.value for f in x509.ReasonFlags}
    value = getattr(reason, "value", reason)
    if not isinstance(value, str):
        return None
    return value if value in known.values() else known.get(value)


def _epoch(t) -> float | None:
    """Epoch seconds of a time given as epoch seconds or an aware datetime."""
    if t is None:
        return None
    if isinstance(t, dt.datetime):
        return (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).timestamp()
    return float(t)


def _stamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def revocation_spares(answer, signed_at) -> str | None:
    """Why a `revoked` answer leaves a signature made at `signed_at` (a TrustedTime) standing,
    or None when it refuses: see the module docstring."""
    if signed_at is None:
        return None
    reason = reason_name(getattr(answer, "revocation_reason", None))
    revoked_at = _epoch(getattr(answer, "revoked_at", None))
    if reason not in BENIGN_REASONS or revoked_at is None:
        return None
    latest = signed_at.latest.timestamp()
    if latest >= revoked_at:
        return None
    invalid = _epoch(getattr(answer, "invalidity_date", None))
    if invalid is not None and latest >= invalid:
        return None
    return (f"revoked {_stamp(revoked_at)} ({reason}) after the time-stamped signing time "
            f"{_stamp(signed_at.gen_time.timestamp())}" + (f", invalid since {_stamp(invalid)}" if invalid else "")
            + ": the signature stands")


class _Spared:
    """A revoked answer that does not touch this signature, shown as such in the verdict."""

    status = "good"

    def __init__(self, answer, why: str):
        self.answer, self.why = answer, why
        self.source, self.subject = answer.source, answer.subject
        self.reason = why

    def as_dict(self) -> dict:
        return self.answer.as_dict() | {"status": "revoked", "spared": True, "reason": self.why}


def _tsa_void(signed_at, lookup, mode: str, asked: list) -> str:
    """Why the TSA's standing voids this token ("" when it stands); answers land in `asked`."""
    tsa = tuple(signed_at.tsa_path)
    n = len(tsa) - 1
    for i in range(n):
        a = lookup(tsa[i], tsa[i + 1], n - i)
        d = a.as_dict() | {"role": "tsa"}
        if d not in asked:
            asked.append(d)
        if a.status == "revoked" and revocation_spares(a, signed_at) is None:
            # the same rule as for signers: the TSA's revocation reaches the token unless it
            # is benign and dated (invalidityDate included) after the latest instant the token allows
            return f"time-stamp void: TSA certificate {a.subject} is revoked: {a.reason}"
        if a.status == "unknown" or (a.status not in ("good", "revoked") and mode != "soft-fail"):
            # a token whose TSA's standing is not established dates nothing
            return f"time-stamp void: revocation status of TSA certificate {a.subject} is {a.status}: {a.reason}"
    return ""


def answers_for(s, lookup, now: dt.datetime, mode: str = "enforce") -> tuple[list, str, list, object]:
    """(answers, note, TSA answers, the TrustedTime used): the revocation answers for one
    signer's path (revocations that spare its time-stamped signature turned into `_Spared`);
    a note when a TSA's standing voided a token — a later token that counts then stands in
    (the signer's path valid at its time too), else the signer is judged at now (answers
    empty when it fails there); the TSA answers asked for; the token finally relied on."""
    from sifguard.x509.chain import validity_problem
    signed_at, notes, asked = None, [], []
    for cand in ((s.signed_at,) + tuple(getattr(s, "later_times", ())) if s.signed_at is not None else ()):
        void = _tsa_void(cand, lookup, mode, asked)
        if void:
            notes.append(void)
            continue
        if cand is not s.signed_at:     # a later token: the signer's path must be valid at its time too
            problem = validity_problem(s.path, cand.gen_time, cand.accuracy)
            if problem:
                notes.append(f"time-stamp of {cand.as_dict()['gen_time']} by {cand.tsa}: {problem}")
                continue
            notes.append(f"judged at the time-stamp of {cand.as_dict()['gen_time']} by {cand.tsa} instead")
        signed_at = cand
        break
    note = "; ".join(notes)
    if signed_at is None and s.signed_at is not None:
        problem = validity_problem(s.path, now)
        if problem:
            return [], f"{note}; at now: {problem}", asked, None
    links = len(s.path) - 1
    out = []
    for i in range(links):
        a = lookup(s.path[i], s.path[i + 1], links - i)
        if a.status == "revoked":
            why = revocation_spares(a, signed_at)
            if why:
                a = _Spared(a, why)
        out.append(a)
    return out, note, asked, signed_at
