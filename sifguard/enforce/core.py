"""The decision itself, pure: (candidate rules, what verification found, revocation
answers) → a frozen Verdict. No files, no network, no clock of its own: the engine
(enforce/decide.py) gathers the inputs; tests feed them directly, so every policy and
revocation case is decided here without servers or sleeps.

Revocation answers come through `lookup(cert, issuer, links_left) -> answer` (an object with
`status` good|revoked|unknown|error, `source`, `reason`, `subject`, `as_dict()`); the
engine passes a memoised checker bound to one deadline, tests pass a dict's `get`.
Only `error` (no answer could be had) is ever forgiven, and only under `soft-fail`:
`unknown` refuses in every mode, and so does `revoked` — unless the signature carries a
time-stamp that counts and the revocation cannot touch it (`revocation_spares`): a benign
reason (affiliationChanged, superseded, cessationOfOperation, certificateHold,
privilegeWithdrawn) with the revocation — and its invalidityDate, when given — after the
latest instant the token allows. keyCompromise, cACompromise, aACompromise, unspecified
or no reason refuse whatever the time. A TSA certificate revoked for a compromise, or
before the token's genTime, voids the token: the signer is then judged at now.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509

import datetime as dt

from sifguard.policy.decide import signer_allowed
from sifguard.policy.model import Rule
from sifguard.x509.chain import SignerIdentity

# revocation reasons that date the key's misuse to no known instant: nothing it signed stands
COMPROMISE_REASONS = frozenset({"keyCompromise", "cACompromise", "aACompromise", "unspecified", None})


@dataclass(frozen=True)
class Signer:
    """A signature's signer whose signature verified over intact content, with the certificate
    path built once (leaf → root; when not `authentic`, the certificates the image carried)."""

    group: int
    path: tuple[x509.Certificate, ...]
    identity: SignerIdentity
    issuers: tuple[str, ...]            # SHA-256 fingerprints of path[1:]
    authentic: bool = True              # path ends at a trusted root (validity aside)
    authenticity: str = ""              # why (not)
    expiry: tuple[bool, str] = (True, "")   # every certificate of path valid at the signing time
    signed_at: object = None            # sifguard.tsp.token.TrustedTime that counted, or None
    time: tuple = ()                    # (key, value) pairs: which time validity was judged at, why

    @property
    def valid(self) -> bool:
        """Authentic and in time: what strict verification asks of a signer."""
        return self.authentic and self.expiry[0]

    def as_dict(self) -> dict:
        d = self.identity.as_dict() | {"group": self.group}
        if self.time:
            d["time"] = dict(self.time)
        return d


@dataclass(frozen=True)
class Findings:
    """What integrity verification and path building found in one image (no policy yet)."""

    verified: bool                                    # every group: integrity ok, a trusted signature
    reason: str = ""                                  # why not, when not verified
    groups: tuple[tuple[int, tuple[Signer, ...], tuple[str, ...]], ...] = ()   # (group, signers, problems)
    reported: tuple[dict, ...] = ()                   # signers seen on a refused image (for the verdict)
    digests: tuple[tuple[str, str], ...] = ()         # object id → "sha256:…"
    image_cache: str = "off"                          # hit | miss | off
    integrity: bool = True                            # every group: a signature over intact content


@dataclass(frozen=True)
class Verdict:
    image: str
    allowed: bool = False
    decision: str = "refuse"            # allow | refuse | audit (allowed although it would be refused)
    rule: str = ""
    action: str = "enforce"
    reason: str = ""
    signers: tuple[dict, ...] = ()
    revocation: tuple[dict, ...] = ()
    revocation_source: str = ""
    image_cache: str = "off"            # hit | miss | off
    context: tuple[tuple[str, str], ...] = ()
    candidates: tuple[str, ...] = ()    # rules weighed together when the job context was incomplete
    elapsed_ms: float = 0.0
    digests: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict:
        d = {"image": self.image, "allowed": self.allowed, "verified": self.allowed,
             "decision": self.decision, "rule": self.rule, "action": self.action, "reason": self.reason,
             "signers": list(self.signers), "revocation": list(self.revocation),
             "revocation_source": self.revocation_source, "image_cache": self.image_cache,
             "context": dict(self.context), "elapsed_ms": round(self.elapsed_ms, 1)}
        if len(self.candidates) > 1:
            d["candidates"] = list(self.candidates)
        return d


@dataclass(frozen=True)
class _Outcome:
    allowed: bool
    reason: str
    signers: tuple[dict, ...] = ()
    revocation: tuple[dict, ...] = ()
    revocation_source: str = ""


Lookup = Callable[[x509.Certificate, x509.Certificate, int], object]   # links_left: of this path, this one included


def _stamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def revocation_spares(answer, signed_at) -> str | None:
    """Why a `revoked` answer leaves a signature made at `signed_at` (a TrustedTime) standing,
    or None when it refuses: see the module docstring."""
    if signed_at is None:
        return None
    reason = getattr(answer, "revocation_reason", None)
    revoked_at = getattr(answer, "revoked_at", None)
    if reason in COMPROMISE_REASONS or revoked_at is None:
        return None
    latest = signed_at.latest.timestamp()
    if latest >= revoked_at:
        return None
    invalid = getattr(answer, "invalidity_date", None)
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


def _answers(s: Signer, lookup: Lookup, now: dt.datetime, mode: str = "enforce") -> tuple[list, str]:
    """The revocation answers for one signer's path (revocations that spare its time-stamped
    signature turned into `_Spared`), plus a note when the TSA's own revocation voided the
    token and the signer had to be judged at now instead."""
    signed_at, note = s.signed_at, ""
    if signed_at is not None:
        tsa = tuple(signed_at.tsa_path)
        n = len(tsa) - 1
        for i in range(n):
            a = lookup(tsa[i], tsa[i + 1], n - i)
            if a.status == "revoked" and revocation_spares(a, signed_at) is None:
                # the same rule as for signers: the TSA's revocation reaches the token unless it
                # is benign and dated (invalidityDate included) after the latest instant the token allows
                signed_at = None
                note = f"time-stamp void: TSA certificate {a.subject} is revoked: {a.reason}"
                break
            if a.status == "unknown" or (a.status not in ("good", "revoked") and mode != "soft-fail"):
                signed_at = None    # a token whose TSA's standing is not established dates nothing
                note = f"time-stamp void: revocation status of TSA certificate {a.subject} is {a.status}: {a.reason}"
                break
    if signed_at is None and s.signed_at is not None:
        from sifguard.x509.chain import validity_problem
        problem = validity_problem(s.path, now)
        if problem:
            return [], f"{note}; at now: {problem}"
    links = len(s.path) - 1
    out = []
    for i in range(links):
        a = lookup(s.path[i], s.path[i + 1], links - i)
        if a.status == "revoked":
            why = revocation_spares(a, signed_at)
            if why:
                a = _Spared(a, why)
        out.append(a)
    return out, note


def evaluate(rule: Rule, findings: Findings, lookup: Lookup, default_mode: str) -> _Outcome:
    """One rule's answer for this image."""
    if rule.require == "any":
        return _Outcome(True, f"rule '{rule.name}' does not require a signature", revocation_source="none")
    if not findings.verified:
        return _Outcome(False, findings.reason, signers=findings.reported)
    mode = rule.revocation_mode or default_mode
    now = dt.datetime.now(dt.timezone.utc)
    chosen, revocation, soft = [], [], []
    for g, signers, problems in findings.groups:
        valid = [s for s in signers if s.valid]
        allowed = [s for s in valid if signer_allowed(rule, s.identity, s.issuers)]
        if not allowed:
            seen = [s.identity.subject + (f" <{', '.join(s.identity.emails)}>" if s.identity.emails else "")
                    for s in valid] + list(problems)
            return _Outcome(False, f"group {g}: signed by {'; '.join(seen)}, which rule '{rule.name}' does not allow"
                            if seen else f"group {g}: no trusted signature")
        if mode == "off":
            chosen.append(allowed[0].as_dict())
            continue
        checked, voided = [], []
        for s in allowed:
            answers, note = _answers(s, lookup, now, mode)
            if note and not answers:
                voided.append(note)
                continue
            if all(a.status == "good" for a in answers):
                chosen.append(s.as_dict() | ({"time_note": note} if note else {}))
                revocation += [a.as_dict() for a in answers]
                break
            checked.append((s, answers))
        else:
            if not checked:
                return _Outcome(False, f"group {g}: {voided[0]}")
            bad = [a for _, answers in checked for a in answers if a.status != "good"]
            revocation += [a.as_dict() for a in bad]
            revoked = [a for a in bad if a.status == "revoked"]
            unknown = [a for a in bad if a.status == "unknown"]
            if revoked:
                return _Outcome(False, f"group {g}: signer certificate {revoked[0].subject} is revoked: "
                                f"{revoked[0].reason}", revocation=tuple(revocation),
                                revocation_source=_sources(revocation))
            if unknown:
                return _Outcome(False, f"group {g}: revocation status of {unknown[0].subject} is unknown to "
                                "its responder", revocation=tuple(revocation), revocation_source=_sources(revocation))
            if mode != "soft-fail":
                return _Outcome(False, f"group {g}: revocation status of {bad[0].subject} could not be "
                                f"established (revocation.mode {mode}): {bad[0].reason}",
                                revocation=tuple(revocation), revocation_source=_sources(revocation))
            soft.append(f"{bad[0].subject}: {bad[0].reason}")
            chosen.append(checked[0][0].as_dict())
    reason = f"signed by {'; '.join(s['subject'] for s in chosen)}; rule '{rule.name}'"
    if soft:
        return _Outcome(True, reason + f"; revocation not established (soft-fail): {'; '.join(soft)}",
                        tuple(chosen), tuple(revocation), "soft-fail")
    if mode == "off":
        return _Outcome(True, reason + "; revocation not checked (mode off)", tuple(chosen), (), "off")
    return _Outcome(True, reason, tuple(chosen), tuple(revocation), _sources(revocation) or "none")


def _sources(revocation: list | tuple) -> str:
    return ", ".join(sorted({r["source"] for r in revocation if r.get("source")}))


def decide(rules: tuple[Rule, ...], image: str, findings: Findings, lookup: Lookup, default_mode: str,
           context: dict | None = None) -> Verdict:
    """The verdict under every candidate rule at once: refused if any enforcing candidate
    refuses, `audit` if only audit candidates would refuse, allowed otherwise."""
    outcomes = [(r, evaluate(r, findings, lookup, default_mode)) for r in rules]
    refusing = [(r, o) for r, o in outcomes if not o.allowed and r.action != "audit"]
    auditing = [(r, o) for r, o in outcomes if not o.allowed and r.action == "audit"]
    rule, out = (refusing or auditing or outcomes)[0]
    reason = out.reason
    if len(rules) > 1 and (refusing or auditing):
        reason += (f" (job context not established from Slurm: rule '{rule.name}' is one of "
                   f"{len(rules)} rules it could select, and all must allow)")
    if refusing:
        allowed, decision = False, "refuse"
    elif auditing:
        allowed, decision = True, "audit"
        reason = f"audit rule '{rule.name}': would refuse: {reason}"
    else:
        allowed, decision = True, "allow"
    return Verdict(image=image, allowed=allowed, decision=decision, rule=rule.name, action=rule.action,
                   reason=reason, signers=out.signers, revocation=out.revocation,
                   revocation_source=out.revocation_source, image_cache=findings.image_cache,
                   context=tuple(sorted((context or {}).items())), candidates=tuple(r.name for r in rules),
                   digests=findings.digests)


def refusal(image: str, reason: str, context: dict | None = None, rule: str = "") -> Verdict:
    """A verdict for an image that never reached verification (unreadable, not a file, …)."""
    return Verdict(image=image, reason=reason, rule=rule, context=tuple(sorted((context or {}).items())))
