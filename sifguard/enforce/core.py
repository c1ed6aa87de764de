"""The decision itself, pure: (candidate rules, what verification found, revocation
answers) → a frozen Verdict. No files, no network, no clock of its own: the engine
(enforce/decide.py) gathers the inputs; tests feed them directly, so every policy and
revocation case is decided here without servers or sleeps.

A rule weighs four checks, each with the action its verification level (and overrides)
gives it — enforce (a failure refuses), log (a failure is recorded; the image runs, the
decision says `audit`) or skip (not evaluated): *integrity* (every group has a signature
over intact content), *authenticity* (a signer chaining to the roots, allowed by the rule's
`signers`, and — with a quorum — enough distinct signers filling the named sets), *expiry*
(the signer's certificates valid at the signing time; `timestamp: required` makes a
signature without a counting token fail it) and *revocation*. Each check's outcome is in
the verdict (`checks`) and so in the audit log.

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

from sifguard.enforce.revocation_time import answers_for
from sifguard.policy.decide import signer_allowed, signer_matches
from sifguard.policy.model import Rule
from sifguard.x509.chain import SignerIdentity



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
    later_times: tuple = ()             # the other tokens that count, in order: stand-ins when the
                                        # first one's TSA turns out revoked
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
    checks: tuple[tuple[str, str, str, str], ...] = ()   # (check, action, result pass|fail|skipped, reason)

    def as_dict(self) -> dict:
        d = {"image": self.image, "allowed": self.allowed, "verified": self.allowed,
             "decision": self.decision, "rule": self.rule, "action": self.action, "reason": self.reason,
             "signers": list(self.signers), "revocation": list(self.revocation),
             "revocation_source": self.revocation_source, "image_cache": self.image_cache,
             "context": dict(self.context), "elapsed_ms": round(self.elapsed_ms, 1)}
        if len(self.candidates) > 1:
            d["candidates"] = list(self.candidates)
        if self.checks:
            d["checks"] = {c: {"action": a, "result": r, "reason": why} for c, a, r, why in self.checks}
        return d


@dataclass(frozen=True)
class _Outcome:
    allowed: bool
    reason: str
    signers: tuple[dict, ...] = ()
    revocation: tuple[dict, ...] = ()
    revocation_source: str = ""
    checks: tuple[tuple[str, str, str, str], ...] = ()
    logged: tuple[str, ...] = ()          # failures of checks whose action is `log`


Lookup = Callable[[x509.Certificate, x509.Certificate, int], object]   # links_left: of this path, this one included


STRICT = {"integrity": "enforce", "authenticity": "enforce", "expiry": "enforce", "revocation": "enforce"}
CHECK_ORDER = ("integrity", "authenticity", "expiry", "timestamp", "revocation")


def rule_actions(rule: Rule) -> dict[str, str]:
    """check -> enforce | log | skip for this rule (strict when it says nothing)."""
    v = getattr(rule, "verification", None)
    if v is None:
        return dict(STRICT)
    from sifguard.policy.levels import actions
    return actions(v)


def _timestamp_required(rule: Rule) -> bool:
    v = getattr(rule, "verification", None)
    return v is not None and getattr(v, "timestamp", "optional") == "required"


def _who(s: Signer) -> str:
    return s.identity.subject + (f" <{', '.join(s.identity.emails)}>" if s.identity.emails else "")


class _Tally:
    """Each check's outcome for one rule, in the order they were weighed."""

    def __init__(self, acts: dict[str, str], timestamp: str):
        self.acts, self.timestamp = acts, timestamp
        self.results: dict[str, tuple[str, str]] = {}
        self.logged: list[str] = []

    def ok(self, check: str, why: str = "") -> None:
        if self.results.get(check, ("pass",))[0] == "pass":
            self.results[check] = ("pass", why)

    def fail(self, check: str, why: str) -> bool:
        """Record a failure; True when it refuses (action enforce)."""
        if self.results.get(check, ("",))[0] != "fail":
            self.results[check] = ("fail", why)
        if self.acts.get(check, "enforce") == "log":
            self.logged.append(f"{check}: {why}")
            return False
        return self.acts.get(check, "enforce") == "enforce"

    def rows(self) -> tuple:
        out = []
        for c in CHECK_ORDER:
            action = self.timestamp if c == "timestamp" else self.acts.get(c, "enforce")
            if c != "timestamp" and action == "skip":
                out.append((c, action, "skipped", ""))
            elif c in self.results:
                out.append((c, action, *self.results[c]))
            elif c != "timestamp":
                out.append((c, action, "skipped", "not reached"))
        return tuple(out)

    def outcome(self, allowed: bool, reason: str, **kw) -> _Outcome:
        return _Outcome(allowed, reason, checks=self.rows(), logged=tuple(self.logged), **kw)


def _authenticity_problem(rule: Rule, s: Signer) -> str | None:
    if not s.authentic:
        return s.authenticity or "certificate does not chain to a trusted root"
    if not signer_allowed(rule, s.identity, s.issuers):
        return f"signer {_who(s)} is not allowed by rule '{rule.name}'"
    return None


def _expiry_problem(rule: Rule, s: Signer) -> str | None:
    if not s.authentic:
        return "not judged: the signer's certificate does not chain to a trusted root"
    if _timestamp_required(rule) and s.signed_at is None:
        why = dict(s.time).get("why", "no time-stamp token")
        return f"rule '{rule.name}' requires a time-stamp; {_who(s)}: {why}"
    if not s.expiry[0]:
        return s.expiry[1]
    return None


def _key_of(s: Signer) -> bytes:
    """The distinctness of a signer: its public key (renewed certificates of one key are one signer)."""
    from cryptography.hazmat.primitives import serialization
    return s.path[0].public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)


def _quorum(rule: Rule, signer_sets, signers: list[Signer], fills: dict | None = None):
    """(assigned signers, problem) for the rule's quorum over these signers; `fills` gets
    signer -> the set it fills."""
    fills = {} if fills is None else fills
    q = getattr(rule, "quorum", None)
    if q is None:
        return None, None
    from sifguard.policy.quorum import satisfy
    sets = dict(signer_sets)
    slots = [tuple(sets.get(name, ())) for name in q.slots]
    # only authentic signers the rule's own `signers` allow may fill a slot; one key counts once
    pool = [s for s in signers if s.authentic and signer_allowed(rule, s.identity, s.issuers)]
    ok, assignment = satisfy(slots, pool, q.count, lambda p, s: signer_matches(p, s.identity, s.issuers),
                             key=_key_of)
    chosen = [pool[j] for _, j in assignment]
    fills.update({id(pool[j]): q.slots[i] for i, j in assignment})
    if ok:
        return chosen, None
    filled = ", ".join(f"{q.slots[i]}: {_who(pool[j])}" for i, j in assignment) or "none"
    return chosen, (f"rule '{rule.name}' needs {q.count} distinct signers of [{', '.join(q.slots)}]; "
                    f"{len(assignment)} found ({filled})")


def _fills_same(rule: Rule, signer_sets, a: Signer, b: Signer) -> bool:
    """Whether `b` matches every named set `a` matches (so it can take a's place in a quorum)."""
    sets = dict(signer_sets or ())
    for name in dict.fromkeys(getattr(rule, "quorum").slots):
        pats = sets.get(name, ())
        if any(signer_matches(p, a.identity, a.issuers) for p in pats) and \
                not any(signer_matches(p, b.identity, b.issuers) for p in pats):
            return False
    return _key_of(a) != _key_of(b) and b.authentic


def evaluate(rule: Rule, findings: Findings, lookup: Lookup, default_mode: str, signer_sets=()) -> _Outcome:
    """One rule's answer for this image, check by check (see the module docstring)."""
    acts = rule_actions(rule)
    tally = _Tally(acts, "required" if _timestamp_required(rule) else "optional")
    if rule.require == "any":
        tally.acts = {c: "skip" for c in acts}
        return tally.outcome(True, f"rule '{rule.name}' does not require a signature", revocation_source="none")
    if acts["integrity"] == "skip":
        return tally.outcome(True, f"rule '{rule.name}' skips verification (level skip)", revocation_source="none")
    if not findings.integrity:
        tally.fail("integrity", findings.reason)
        return tally.outcome(False, findings.reason, signers=findings.reported)
    tally.ok("integrity", "every group has a signature over intact content")
    strict = acts == STRICT and getattr(rule, "quorum", None) is None and not _timestamp_required(rule)
    if strict and not findings.verified:
        # the verifier's own words (which signer, which certificate, why)
        short = next((ss for _, ss, _ in findings.groups if not any(x.valid for x in ss)), ())
        if any(x.authentic for x in short):
            tally.ok("authenticity")
            tally.fail("expiry", findings.reason)
        else:
            tally.fail("authenticity", findings.reason)
        return tally.outcome(False, findings.reason, signers=findings.reported)
    mode = "off" if acts["revocation"] == "skip" else (rule.revocation_mode or default_mode)
    now = dt.datetime.now(dt.timezone.utc)
    chosen, revocation, soft = [], [], []
    stamped = []
    rev_memo: dict[int, tuple] = {}
    void_notes: dict[int, str] = {}     # signer -> why its time-stamps all stopped counting ("" if not)

    def revoked_why(s: Signer, g: int) -> tuple:
        """(refusal reason or None, answers to show, soft-fail note, time note) for one signer's path."""
        if id(s) not in rev_memo:
            answers, note, tsa_asked, used = answers_for(s, lookup, now, mode)
            revocation.extend(x for x in tsa_asked if x not in revocation)
            voided = s.signed_at is not None and used is None
            void_notes[id(s)] = note if voided else ""
            if voided and not answers:
                rev_memo[id(s)] = (f"group {g}: {note}", [], "", note)
            elif all(a.status == "good" for a in answers):
                rev_memo[id(s)] = (None, answers, "", note)
            else:
                bad = [a for a in answers if a.status != "good"]
                revoked = [a for a in bad if a.status == "revoked"]
                unknown = [a for a in bad if a.status == "unknown"]
                if revoked:
                    why = f"group {g}: signer certificate {revoked[0].subject} is revoked: {revoked[0].reason}"
                elif unknown:
                    why = f"group {g}: revocation status of {unknown[0].subject} is unknown to its responder"
                elif mode == "soft-fail":
                    rev_memo[id(s)] = (None, answers, f"{bad[0].subject}: {bad[0].reason}", note)
                    return rev_memo[id(s)]
                else:
                    why = (f"group {g}: revocation status of {bad[0].subject} could not be established "
                           f"(revocation.mode {mode}): {bad[0].reason}")
                rev_memo[id(s)] = (why, bad, "", note)
        return rev_memo[id(s)]

    for g, signers, problems in findings.groups:
        signers = list(signers)
        auth = {id(s): _authenticity_problem(rule, s) for s in signers}
        exp = {id(s): _expiry_problem(rule, s) for s in signers}

        def acceptable(s) -> bool:
            return (acts["authenticity"] != "enforce" or auth[id(s)] is None) and \
                   (acts["expiry"] != "enforce" or exp[id(s)] is None)
        # best first: passes everything, then fewer failures (stable within)
        ranked = sorted(signers, key=lambda s: (auth[id(s)] is not None, exp[id(s)] is not None))
        pool = [s for s in ranked if acceptable(s)]
        if not pool:
            valid = [s for s in signers if s.valid]
            if acts["authenticity"] == "enforce" and all(auth[id(s)] for s in signers):
                if valid and not any(signer_allowed(rule, s.identity, s.issuers) for s in valid):
                    why = (f"group {g}: signed by {'; '.join([_who(s) for s in valid] + list(problems))}, "
                           f"which rule '{rule.name}' does not allow")
                else:
                    why = f"group {g}: no trusted signature ({next(iter(auth.values())) or 'none'})"
                tally.fail("authenticity", why)
            else:
                s = next(s for s in ranked if exp[id(s)])
                why = f"group {g}: {exp[id(s)]}"
                tally.ok("authenticity")
                tally.fail("expiry", why)
                if _timestamp_required(rule) and s.signed_at is None:
                    tally.results["timestamp"] = ("fail", exp[id(s)])
            return tally.outcome(False, why, signers=findings.reported)

        fills: dict[int, str] = {}
        assigned, qproblem = _quorum(rule, signer_sets or (), pool, fills)
        if qproblem:
            relaxed, rproblem = _quorum(rule, signer_sets or (), [s for s in ranked if s.authentic])
            if not rproblem and acts["expiry"] == "enforce":
                check, why = "expiry", f"group {g}: {qproblem}: " + "; ".join(
                    exp[id(s)] for s in relaxed if exp[id(s)])
            else:
                check, why = "authenticity", f"group {g}: {qproblem}"
            if tally.fail(check, why):
                return tally.outcome(False, why, revocation=tuple(revocation), revocation_source=_sources(revocation))
        need = list(assigned) if assigned else pool[:1]
        spare = [s for s in pool if s not in need and s.authentic]   # stand-ins are asked about: trusted only
        for i, s in enumerate(list(need) if mode != "off" else []):
            if not s.authentic:
                # a path the image made up (authenticity logged or skipped): its AIA and CRL URLs are
                # the image author's, so nobody is asked (no requests to where the image says)
                why = f"group {g}: revocation not asked: {_who(s)} does not chain to a trusted root"
                if tally.fail("revocation", why):
                    return tally.outcome(False, why, revocation=tuple(revocation),
                                         revocation_source=_sources(revocation))
                continue
            while True:
                why, answers, softnote, _ = revoked_why(s, g)
                if why is None:
                    break
                # another acceptable signer may stand in: any one without a quorum; with one,
                # a signer that fills the same set
                # ... and never one whose key already fills another slot (two certificates of one
                # key are one signer: a stand-in must not make them two)
                taken = {_key_of(n) for j, n in enumerate(need) if j != i}
                sub = next((x for x in spare if assigned is None or (
                    _fills_same(rule, signer_sets, s, x) and _key_of(x) not in taken)), None)
                if sub is None:
                    break
                spare.remove(sub)
                need[need.index(s)] = sub
                if id(s) in fills:
                    fills[id(sub)] = fills[id(s)]
                s = sub
            why, answers, softnote, _ = revoked_why(s, g)
            revocation += [a.as_dict() for a in answers]
            if why is not None:
                if tally.fail("expiry" if not answers else "revocation", why):
                    return tally.outcome(False, why, revocation=tuple(revocation),
                                         revocation_source=_sources(revocation))
            if softnote:
                soft.append(softnote)
        for s in need:
            (tally.fail("authenticity", f"group {g}: {auth[id(s)]}") if auth[id(s)] else tally.ok(
                "authenticity", "signer chains to a trusted root and is allowed by the rule"))
            if exp[id(s)]:
                tally.fail("expiry", f"group {g}: {exp[id(s)]}")
            else:
                tally.ok("expiry", s.expiry[1] or "certificates valid at the signing time")
            tnote = rev_memo.get(id(s), (None, [], "", ""))[3]
            void = void_notes.get(id(s), "")
            if s.signed_at is not None and void and _timestamp_required(rule):
                # the TSA's revocation voided the token: it no longer meets `timestamp: required`
                why = f"group {g}: rule '{rule.name}' requires a time-stamp; {_who(s)}: {void}"
                tally.results["timestamp"] = ("fail", why)
                if tally.fail("expiry", why):
                    return tally.outcome(False, why, revocation=tuple(revocation),
                                         revocation_source=_sources(revocation))
            elif s.signed_at is not None and not void:
                stamped.append(s)
            chosen.append(s.as_dict() | ({"time_note": tnote} if tnote else {})
                          | ({"fills": fills.get(id(s))} if assigned else {}))
    if mode != "off" and "revocation" not in tally.results:
        tally.ok("revocation", "no certificate on the signers' paths is revoked" + (
            " (revocations dated after the time-stamped signing time spare it: see revocation)" if any(
                r.get("spared") for r in revocation) else ""))
    if stamped and tally.results.get("timestamp", ("",))[0] != "fail":
        tally.results["timestamp"] = ("pass", "; ".join(sorted({f"{s.signed_at.as_dict()['gen_time']} by {s.signed_at.tsa}"
                                                              for s in stamped})))
    elif tally.timestamp == "required":
        tally.results.setdefault("timestamp", ("fail", "no time-stamp token counts"))
    reason = f"signed by {'; '.join(dict.fromkeys(s['subject'] for s in chosen))}; rule '{rule.name}'"
    if tally.logged:
        reason += f"; logged: {'; '.join(tally.logged)}"
    if soft:
        return tally.outcome(True, reason + f"; revocation not established (soft-fail): {'; '.join(soft)}",
                             signers=tuple(chosen), revocation=tuple(revocation), revocation_source="soft-fail")
    if mode == "off":
        return tally.outcome(True, reason + ("; revocation not checked (mode off)" if acts["revocation"] != "skip"
                                             else "; revocation skipped (verification level)"),
                             signers=tuple(chosen), revocation_source="off")
    return tally.outcome(True, reason, signers=tuple(chosen), revocation=tuple(revocation),
                         revocation_source=_sources(revocation) or "none")


def _sources(revocation: list | tuple) -> str:
    return ", ".join(sorted({r["source"] for r in revocation if r.get("source")}))


def decide(rules: tuple[Rule, ...], image: str, findings: Findings, lookup: Lookup, default_mode: str,
           context: dict | None = None, signer_sets=()) -> Verdict:
    """The verdict under every candidate rule at once: refused if any enforcing candidate
    refuses, `audit` if only audit candidates would refuse, allowed otherwise."""
    outcomes = [(r, evaluate(r, findings, lookup, default_mode, signer_sets)) for r in rules]
    refusing = [(r, o) for r, o in outcomes if not o.allowed and r.action != "audit"]
    auditing = [(r, o) for r, o in outcomes if not o.allowed and r.action == "audit"]
    logging = [(r, o) for r, o in outcomes if o.allowed and o.logged]
    rule, out = (refusing or auditing or logging or outcomes)[0]
    reason = out.reason
    if len(rules) > 1 and (refusing or auditing):
        reason += (f" (job context not established from Slurm: rule '{rule.name}' is one of "
                   f"{len(rules)} rules it could select, and all must allow)")
    if refusing:
        allowed, decision = False, "refuse"
    elif auditing:
        allowed, decision = True, "audit"
        reason = f"audit rule '{rule.name}': would refuse: {reason}"
    else:   # allowed; `audit` when a check whose action is `log` failed (it would refuse under strict)
        allowed, decision = True, ("audit" if logging else "allow")
    return Verdict(image=image, allowed=allowed, decision=decision, rule=rule.name, action=rule.action,
                   reason=reason, signers=out.signers, revocation=out.revocation,
                   revocation_source=out.revocation_source, image_cache=findings.image_cache,
                   context=tuple(sorted((context or {}).items())), candidates=tuple(r.name for r in rules),
                   digests=findings.digests, checks=out.checks)


def refusal(image: str, reason: str, context: dict | None = None, rule: str = "") -> Verdict:
    """A verdict for an image that never reached verification (unreadable, not a file, …)."""
    return Verdict(image=image, reason=reason, rule=rule, context=tuple(sorted((context or {}).items())))
