"""The engine: gathers the decision's inputs for one image — integrity findings (through
the verified-image cache), certificate paths built once, revocation answers under one
deadline — and hands them to the pure core (enforce/core.py) for the Verdict. Every
edge (CLI, Slurm hooks through enforce/gate.py) prints that Verdict its own way."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sifguard.enforce import audit, core
from sifguard.enforce.core import Findings, Signer, Verdict
from sifguard.enforce.image_cache import ImageCache, decode_chain, encode_chain
from sifguard.errors import BadInputError
from sifguard.integrity.verify import INVALID, TAMPERED, UNSUPPORTED, VERIFIED, Trust, judge, verify_image
from sifguard.policy.decide import JobContext, candidate_rules
from sifguard.policy.model import Policy
from sifguard.sif.image import Progress, SifImage
from sifguard.x509 import keys
from sifguard.x509.chain import SignatureMemo, fingerprint, identity

__all__ = ["Engine", "Verdict", "load_certs"]

MAX_RECORDED_SIGNERS = 16     # per group, in a findings record
MAX_RECORD_JUDGEMENTS = 256   # signatures re-judged from one record (path search and tokens each)


def load_certs(paths) -> tuple[x509.Certificate, ...]:
    out = []
    for p in paths:
        if os.path.isdir(p):
            files = sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith((".pem", ".crt", ".cer")))
            if not files:
                raise BadInputError(f"{p}: trust directory holds no .pem/.crt certificate")
        else:
            files = [p]
        for f in files:
            out.extend(keys.load_certificates(f, "trust roots"))
    return tuple(out)


def _signer(group: int, path, res=None) -> Signer:
    """The core's Signer for a path (leaf first); `res`: the SignatureResult that judged it."""
    path = tuple(path)
    if res is None:
        return Signer(group, path, identity(path[0], list(path)), tuple(fingerprint(c) for c in path[1:]))
    authentic = res.passed("authenticity")
    if authentic:
        path = tuple(res.chain)
    return Signer(group, path, identity(path[0], list(path) if authentic else None),
                  tuple(fingerprint(c) for c in path[1:]) if authentic else (),
                  authentic=authentic, authenticity=res.checks.get("authenticity", (False, ""))[1],
                  expiry=res.checks.get("expiry", (False, "not judged")) if authentic else (False, "not judged"),
                  signed_at=res.signed_at, later_times=tuple(res.trusted_times[1:]),
                  time=tuple(res.time_dict().items()) if res.time_basis else ())


def _integrity_ok(rep) -> bool:
    """Every group holds a signature that verifies over intact content, and none that a
    trusted signer made fails (whoever made the good one)."""
    if not rep.groups:
        return False
    return all(st not in (INVALID, TAMPERED, "unsigned", UNSUPPORTED)
               and any(s.group == g and s.passed("integrity") for s in rep.signatures)
               for g, st in rep.groups.items())


# What a token's verdict depends on besides its bytes and the signature value (both in the
# record entry) and the roots/TSA roots (the record's key): the token rules of this code,
# the policy's intermediates and the path-search limits. Bump on any change to the rules in
# sifguard/tsp/token.py or sifguard/x509/chain.py that could refuse a token accepted before.
TOKEN_RULES = b"sifguard-token-rules-1"


def times_id(trust) -> str:
    h = hashlib.sha256(TOKEN_RULES + b"\0" + repr(trust.limits).encode() + b"\0")
    h.update(b"".join(sorted(c.public_bytes(serialization.Encoding.DER) for c in trust.intermediates or ())))
    return h.hexdigest()


def _recorded_times(verdicts: dict, tid: str) -> dict:
    """The tokens that counted, as a findings record keeps them: their trusted times (TSA
    path as DER) under `tid`. Reused on a hit so that a warm decision neither parses nor
    re-verifies them (asn1crypto's import alone is ~25 ms a process); the TSA path's
    revocation is still asked on every decision, and a token that did not count is
    verified again (its refusal may be the path search's bounds or the clock)."""
    return {"id": tid, "valid": {h: v.as_record() for h, v in verdicts.items()}}


def _times_from_record(d, tid: str) -> dict | None:
    """The trusted times _recorded_times kept under `tid`; None (every token verified
    again) when they were kept under other rules or the entry is damaged."""
    if not isinstance(d, dict) or d.get("id") != tid or not isinstance(d.get("valid"), dict) or not d["valid"]:
        return None
    from sifguard.tsp.token import TrustedTime
    from sifguard.x509.keys import certificate_problem
    out = {}
    try:
        for h, v in list(d["valid"].items())[:64]:
            if not isinstance(h, str):
                return None
            out[h] = TrustedTime.from_record(v)
            if any(certificate_problem(c) for c in out[h].tsa_path):
                return None
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
        return None
    return out


def _record(rep, tid: str) -> dict:
    """What a verification report found, JSON-ready — the form the image cache and the
    store keep: per group, every signature that verified over intact content (its chain,
    signature value and time-stamp tokens: authenticity and expiry are judged again on
    use, at the signing time), the object digests, and strict verification's outcome."""
    reported = [s.signer.as_dict() | {"group": s.group, "status": s.status} for s in rep.signatures if s.signer]
    groups: dict[str, list] = {}
    # strictly verified signatures first; at most MAX_RECORDED_SIGNERS a group (an image may
    # carry thousands of signatures that verify with keys of its own making)
    for s in sorted(rep.signatures, key=lambda s: s.status != VERIFIED):
        if s.kind == "dsse" and s.passed("integrity") and (s.chain or s.embedded) \
                and len(groups.get(str(s.group), ())) < MAX_RECORDED_SIGNERS:
            groups.setdefault(str(s.group), []).append({
                "chain": encode_chain(s.chain or s.embedded), "authentic": bool(s.chain),
                "sig": base64.b64encode(s.sig).decode(),
                "tokens": [base64.b64encode(t).decode() for t in s.tokens],
                "times": _recorded_times(s.token_verdicts, tid)})
    integrity = _integrity_ok(rep)
    rec = {"format": 2, "verified": rep.verified, "integrity": integrity, "reason": rep.reason,
           "reported": reported, "groups": groups if integrity else {}}
    if rep.verified:
        rec["digests"] = {str(k): d for k, d in rep.digests.items()}
    return rec


class Engine:
    """A policy loaded once (roots parsed, revocation checker ready) for many decisions."""

    def __init__(self, policy: Policy, checker=None):
        self.policy = policy
        self.roots = load_certs(policy.roots)
        self.intermediates = load_certs(policy.intermediates)
        tsa = getattr(policy, "tsa_roots", ())
        self.tsa_roots = load_certs(tsa) if tsa else None
        self.trust = Trust(roots=self.roots, intermediates=self.intermediates, tsa_roots=self.tsa_roots)
        # what findings depend on: the record format, the roots and the TSA roots
        h = hashlib.sha256(b"sifguard-findings-v2\0")
        for certs in (self.roots, self.tsa_roots):
            h.update(b"".join(sorted(r.public_bytes(serialization.Encoding.DER) for r in certs or ())) + b"\0")
        self.roots_id = h.hexdigest()
        self.times_id = times_id(self.trust)
        self.image_cache = ImageCache(policy.image_cache, self.roots_id)
        self._checker = checker
        self._memo = SignatureMemo(max_total=None)   # each link's signature checked once per process
        self.last_audit_error = ""

    @property
    def checker(self):
        if self._checker is None:
            from sifguard.ocsp.client import Checker
            self._checker = Checker(self.policy.revocation)
        return self._checker

    # ------------------------------------------------------------------------------
    def decide(self, image: str, ctx: JobContext = JobContext(), fd: int | None = None,
               progress: Progress | None = None, log: bool = True, cache: bool = True) -> Verdict:
        """Decide `image` for this job. With `fd`, the bytes verified are the fd's (e.g. a
        sealed copy, or a file the hook opened as the job's user) and `image` must be the
        path of what that fd holds: rules match it."""
        t0 = time.monotonic()
        real = os.path.realpath(image) if fd is None else image
        rules = candidate_rules(self.policy, real, ctx)
        if all(r.require == "any" or core.rule_actions(r)["integrity"] == "skip" for r in rules):
            findings = Findings(verified=False, reason="not read: no candidate rule requires a signature",
                                integrity=False)
        else:
            findings = self.findings(image, fd, progress, cache)
        v = core.decide(rules, real, findings, self._lookup(), self.policy.revocation.mode, ctx.as_dict(),
                        getattr(self.policy, "signer_sets", ()))
        v = dataclasses.replace(v, elapsed_ms=(time.monotonic() - t0) * 1000)
        if log:
            self.log(v, hook="verify")
        return v

    def log(self, v: Verdict, **extra) -> None:
        """The one audit writer's call for a decision (errors kept for the caller to report)."""
        try:
            audit.write_decision(self.policy.audit_log, v, metrics=getattr(self.policy, "metrics_textfile", None),
                                 **extra)
            self.last_audit_error = ""
        except audit.AuditError as e:
            self.last_audit_error = str(e)

    def _lookup(self):
        """Revocation answers for this decision: each (certificate, issuer) asked once,
        every exchange inside one deadline (`revocation.timeout`), shared out among the
        links of the path still to check."""
        memo: dict = {}
        deadline = time.monotonic() + self.policy.revocation.timeout

        def get(cert, issuer, links_left=1):
            k = (cert.serial_number, fingerprint(issuer))
            if k not in memo:
                memo[k] = self.checker.check(cert, issuer, deadline=self.checker.share(deadline, links_left))
            return memo[k]
        return get

    # ------------------------------------------------------------------------------
    def findings(self, image: str, fd: int | None = None, progress: Progress | None = None,
                 cache: bool = True, hash_objects: bool = True) -> Findings:
        """Integrity findings with each signer's path built exactly once: by the verifier
        on a cache miss, from the cached chain (at now) on a hit. `hash_objects=False`: on a
        miss, the quick look of verify_image (data not read; never cached, image_cache "quick")."""
        use = bool(self.policy.image_cache) and cache
        with SifImage(image, fd=fd) as img:
            st = img.stat
            hit = self.image_cache.get(st) if use else None
            if hit and hit.get("format") == 2:
                return self._from_record(hit, "hit")
            rep = verify_image(img, self.trust, progress=progress, hash_objects=hash_objects)
        rec = _record(rep, self.times_id)
        if not hash_objects:
            return self._from_report(rep, rec, "quick")
        if use and rep.verified:
            self.image_cache.put(st, rec)
        return self._from_report(rep, rec, "miss" if use else "off")

    def _from_report(self, rep, rec: dict, how: str) -> Findings:
        """Findings from a fresh report: the paths the verifier built, not rebuilt."""
        if not rec["integrity"]:
            return Findings(False, rep.reason, reported=tuple(rec["reported"]), image_cache=how, integrity=False)
        groups: dict[int, list[Signer]] = {}
        for s in sorted(rep.signatures, key=lambda s: s.status != VERIFIED):
            if s.kind == "dsse" and s.passed("integrity") and (s.chain or s.embedded) \
                    and len(groups.get(s.group, ())) < MAX_RECORDED_SIGNERS:
                groups.setdefault(s.group, []).append(_signer(s.group, s.chain or s.embedded, s))
        return Findings(rep.verified, rep.reason if not rep.verified else "",
                        groups=tuple((g, tuple(ss), ()) for g, ss in sorted(groups.items())),
                        reported=tuple(rec["reported"]), digests=tuple(sorted(rec.get("digests", {}).items())),
                        image_cache=how)

    # --- the verified image store (sifguard/store) --------------------------------------
    def verifier(self):
        """For the store's stager: (fd of the staged bytes, object digests computed while
        copying them) → a findings record under this engine's roots (JSON-ready)."""
        def verify(fd: int, known: dict) -> dict:
            with SifImage("<store copy>", fd=fd) as img:
                rep = verify_image(img, self.trust, known_digests={int(k): v for k, v in known.items()})
            return _record(rep, self.times_id)
        return verify

    def findings_from_record(self, rec: dict) -> Findings:
        """Findings from a store record: authenticity and expiry judged again, at now or at
        the time-stamped signing time."""
        if rec.get("format") != 2 or not rec.get("integrity"):
            return Findings(False, rec.get("reason", "not verified"), reported=tuple(rec.get("reported", ())),
                            image_cache="store", integrity=False)
        return self._from_record(rec, "store")

    def decide_findings(self, image: str, ctx: JobContext, findings: Findings, rules=None) -> Verdict:
        """The verdict for `image` (the path that chooses the rules) with these findings."""
        t0 = time.monotonic()
        rules = rules if rules is not None else candidate_rules(self.policy, image, ctx)
        v = core.decide(rules, image, findings, self._lookup(), self.policy.revocation.mode, ctx.as_dict(),
                        getattr(self.policy, "signer_sets", ()))
        return dataclasses.replace(v, elapsed_ms=(time.monotonic() - t0) * 1000)

    @staticmethod
    def valid_until(v: Verdict, findings: Findings, ttl: float, now: float | None = None) -> float:
        """How long an allowing verdict may be reused: `ttl` from now (shorter when revocation
        was forgiven under soft-fail), never past any signer certificate's notAfter nor past
        the moment a revocation answer it rests on stops being current (OCSP nextUpdate,
        CRL nextUpdate, thisUpdate + revocation.max_age)."""
        now = time.time() if now is None else now
        life = now + (min(ttl, 30.0) if v.revocation_source == "soft-fail" else ttl)
        for r in v.revocation:
            if isinstance(r.get("good_until"), (int, float)):
                life = min(life, float(r["good_until"]))
        voided = any(d.get("time_note") for d in v.signers)   # a token its TSA's revocation voided
        for _, signers, _ in findings.groups:
            for s in signers:
                if s.signed_at is None or voided:   # judged at now: good until a certificate expires
                    for c in s.path:
                        life = min(life, c.not_valid_after_utc.timestamp())
        return life

    def _from_record(self, rec: dict, how: str) -> Findings:
        groups, refusal, budget = [], "", {}
        for g, sigs in sorted(rec["groups"].items(), key=lambda kv: int(kv[0])):
            signers, problems = [], []
            for s in sigs[:MAX_RECORDED_SIGNERS]:
                budget["judged"] = budget.get("judged", 0) + 1
                if budget["judged"] > MAX_RECORD_JUDGEMENTS:      # as a fresh verification's 256 checks
                    problems.append(f"more than {MAX_RECORD_JUDGEMENTS} signatures in the record: the rest not judged")
                    break
                chain = decode_chain(s["chain"])
                res = judge(chain[0], list(chain[1:]) + list(self.intermediates), self.trust,
                            [base64.b64decode(t) for t in s.get("tokens", ())], base64.b64decode(s.get("sig", "")),
                            self._memo, budget, _times_from_record(s.get("times"), self.times_id))
                res.checks = {"integrity": (True, "recorded"), **res.checks}
                signer = _signer(int(g), chain, res)
                signers.append(signer)
                if not signer.valid:
                    problems.append(f"{chain[0].subject.rfc4514_string()} "
                                    f"({signer.authenticity if not signer.authentic else signer.expiry[1]})")
            signers.sort(key=lambda x: not x.valid)
            if not any(x.valid for x in signers) and not refusal:
                refusal = f"group {g}: no trusted signature ({problems[0] if problems else 'none'})"
            groups.append((int(g), tuple(signers), tuple(problems)))
        return Findings(not refusal, refusal, groups=tuple(groups), reported=tuple(rec.get("reported", ())),
                        digests=tuple(sorted(rec.get("digests", {}).items())), image_cache=how)
