"""The decision itself, pure: (candidate rules, what verification found, revocation
answers) → a frozen Verdict. No files, no network, no clock of its own: the engine
(enforce/decide.py) gathers the inputs; tests feed them directly, so every policy and
revocation case is decided here without servers or sleeps.

Revocation answers come through `lookup(cert, issuer, links_left) -> answer` (an object with
`status` good|revoked|unknown|error, `source`, `reason`, `subject`, `as_dict()`); the
engine passes a memoised checker bound to one deadline, tests pass a dict's `get`.
Only `error` (no answer could be had) is ever forgiven, and only under `soft-fail`:
`revoked` and `unknown` refuse in every mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509

from sifguard.policy.decide import signer_allowed
from sifguard.policy.model import Rule
from sifguard.x509.chain import SignerIdentity


@dataclass(frozen=True)
class Signer:
    """A verified signature's signer, with the certificate path built once (leaf → root)."""

    group: int
    path: tuple[x509.Certificate, ...]
    identity: SignerIdentity
    issuers: tuple[str, ...]            # SHA-256 fingerprints of path[1:]

    def as_dict(self) -> dict:
        return self.identity.as_dict() | {"group": self.group}


@dataclass(frozen=True)
class Findings:
    """What integrity verification and path building found in one image (no policy yet)."""

    verified: bool                                    # every group: integrity ok, a trusted signature
    reason: str = ""                                  # why not, when not verified
    groups: tuple[tuple[int, tuple[Signer, ...], tuple[str, ...]], ...] = ()   # (group, signers, problems)
    reported: tuple[dict, ...] = ()                   # signers seen on a refused image (for the verdict)
    digests: tuple[tuple[str, str], ...] = ()         # object id → "sha256:…"
    image_cache: str = "off"                          # hit | miss | off


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


def evaluate(rule: Rule, findings: Findings, lookup: Lookup, default_mode: str) -> _Outcome:
    """One rule's answer for this image."""
    if rule.require == "any":
        return _Outcome(True, f"rule '{rule.name}' does not require a signature", revocation_source="none")
    if not findings.verified:
        return _Outcome(False, findings.reason, signers=findings.reported)
    mode = rule.revocation_mode or default_mode
    chosen, revocation, soft = [], [], []
    for g, signers, problems in findings.groups:
        allowed = [s for s in signers if signer_allowed(rule, s.identity, s.issuers)]
        if not allowed:
            seen = [s.identity.subject + (f" <{', '.join(s.identity.emails)}>" if s.identity.emails else "")
                    for s in signers] + list(problems)
            return _Outcome(False, f"group {g}: signed by {'; '.join(seen)}, which rule '{rule.name}' does not allow"
                            if seen else f"group {g}: no trusted signature")
        if mode == "off":
            chosen.append(allowed[0].as_dict())
            continue
        checked = []
        for s in allowed:
            links = len(s.path) - 1
            answers = [lookup(s.path[i], s.path[i + 1], links - i) for i in range(links)]
            if all(a.status == "good" for a in answers):
                chosen.append(s.as_dict())
                revocation += [a.as_dict() for a in answers]
                break
            checked.append((s, answers))
        else:
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
