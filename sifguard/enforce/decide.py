"""The engine: gathers the decision's inputs for one image — integrity findings (through
the verified-image cache), certificate paths built once, revocation answers under one
deadline — and hands them to the pure core (enforce/core.py) for the Verdict. Every
edge (CLI, Slurm hooks through enforce/gate.py) prints that Verdict its own way."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sifguard.enforce import audit, core
from sifguard.enforce.core import Findings, Signer, Verdict
from sifguard.enforce.image_cache import ImageCache, decode_chain, encode_chain
from sifguard.errors import BadInputError
from sifguard.integrity.verify import VERIFIED, Trust, verify_image
from sifguard.policy.decide import JobContext, candidate_rules
from sifguard.policy.model import Policy
from sifguard.sif.image import Progress, SifImage
from sifguard.x509 import keys
from sifguard.x509.chain import ChainError, SignatureMemo, build_path, fingerprint, identity

__all__ = ["Engine", "Verdict", "load_certs"]


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


def _signer(group: int, path) -> Signer:
    path = tuple(path)
    return Signer(group, path, identity(path[0], list(path)), tuple(fingerprint(c) for c in path[1:]))


def _record(rep) -> dict:
    """What a verification report found, JSON-ready — the form the image cache and the
    store keep: verified signers' chains per group and object digests, or why not and the
    signers seen."""
    if not rep.verified:
        return {"verified": False, "reason": rep.reason, "reported": [
            s.signer.as_dict() | {"group": s.group, "status": s.status} for s in rep.signatures if s.signer]}
    groups: dict[str, list] = {}
    for s in rep.signatures:
        if s.status == VERIFIED and s.chain:
            groups.setdefault(str(s.group), []).append({"chain": encode_chain(s.chain)})
    return {"verified": True, "reason": rep.reason, "groups": groups,
            "digests": {str(k): d for k, d in rep.digests.items()}}


class Engine:
    """A policy loaded once (roots parsed, revocation checker ready) for many decisions."""

    def __init__(self, policy: Policy, checker=None):
        self.policy = policy
        self.roots = load_certs(policy.roots)
        self.intermediates = load_certs(policy.intermediates)
        ders = sorted(r.public_bytes(serialization.Encoding.DER) for r in self.roots)
        self.roots_id = hashlib.sha256(b"".join(ders)).hexdigest()
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
        if all(r.require == "any" for r in rules):
            findings = Findings(verified=False, reason="not read: no candidate rule requires a signature")
        else:
            findings = self.findings(image, fd, progress, cache)
        v = core.decide(rules, real, findings, self._lookup(), self.policy.revocation.mode, ctx.as_dict())
        v = dataclasses.replace(v, elapsed_ms=(time.monotonic() - t0) * 1000)
        if log:
            self.log(v, hook="verify")
        return v

    def log(self, v: Verdict, **extra) -> None:
        """The one audit writer's call for a decision (errors kept for the caller to report)."""
        try:
            audit.write_decision(self.policy.audit_log, v, **extra)
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
                 cache: bool = True) -> Findings:
        """Integrity findings with each signer's path built exactly once: by the verifier
        on a cache miss, from the cached chain (at now) on a hit."""
        use = bool(self.policy.image_cache) and cache
        with SifImage(image, fd=fd) as img:
            st = img.stat
            hit = self.image_cache.get(st) if use else None
            if hit:
                return self._from_cache(hit)
            rep = verify_image(img, Trust(roots=self.roots, intermediates=self.intermediates), progress=progress)
        rec = _record(rep)
        if not rep.verified:
            return Findings(False, rep.reason, reported=tuple(rec["reported"]), image_cache="miss" if use else "off")
        if use:
            self.image_cache.put(st, rec["groups"], rec["digests"])
        groups: dict[int, list[Signer]] = {}
        for s in rep.signatures:          # the paths the verifier built, not rebuilt from the record
            if s.status == VERIFIED and s.chain:
                groups.setdefault(s.group, []).append(_signer(s.group, s.chain))
        return Findings(True, groups=tuple((g, tuple(ss), ()) for g, ss in sorted(groups.items())),
                        digests=tuple(sorted(rec["digests"].items())), image_cache="miss" if use else "off")

    # --- the verified image store (sifguard/store) --------------------------------------
    def verifier(self):
        """For the store's stager: (fd of the staged bytes, object digests computed while
        copying them) → a findings record under this engine's roots (JSON-ready)."""
        trust = Trust(roots=self.roots, intermediates=self.intermediates)

        def verify(fd: int, known: dict) -> dict:
            with SifImage("<store copy>", fd=fd) as img:
                rep = verify_image(img, trust, known_digests={int(k): v for k, v in known.items()})
            return _record(rep)
        return verify

    def findings_from_record(self, rec: dict) -> Findings:
        """Findings from a store record: paths rebuilt at now from the recorded chains."""
        if not rec.get("verified"):
            return Findings(False, rec.get("reason", "not verified"), reported=tuple(rec.get("reported", ())),
                            image_cache="store")
        return dataclasses.replace(self._from_cache(rec), image_cache="store")

    def decide_findings(self, image: str, ctx: JobContext, findings: Findings, rules=None) -> Verdict:
        """The verdict for `image` (the path that chooses the rules) with these findings."""
        t0 = time.monotonic()
        rules = rules if rules is not None else candidate_rules(self.policy, image, ctx)
        v = core.decide(rules, image, findings, self._lookup(), self.policy.revocation.mode, ctx.as_dict())
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
        for _, signers, _ in findings.groups:
            for s in signers:
                for c in s.path:
                    life = min(life, c.not_valid_after_utc.timestamp())
        return life

    def _from_cache(self, hit: dict) -> Findings:
        now = dt.datetime.now(dt.timezone.utc)
        groups = []
        for g, sigs in sorted(hit["groups"].items(), key=lambda kv: int(kv[0])):
            signers, problems = [], []
            for s in sigs:
                chain = decode_chain(s["chain"])
                try:
                    path = build_path(chain[0], list(chain[1:]) + list(self.intermediates), list(self.roots), now,
                                      memo=self._memo)
                except ChainError as e:
                    problems.append(f"{chain[0].subject.rfc4514_string()} ({e})")
                    continue
                signers.append(_signer(int(g), path))
            if not signers:
                return Findings(False, f"group {g}: no trusted signature ({problems[0] if problems else 'none'})",
                                image_cache="hit")
            groups.append((int(g), tuple(signers), tuple(problems)))
        return Findings(True, groups=tuple(groups), digests=tuple(sorted(hit.get("digests", {}).items())),
                        image_cache="hit")
