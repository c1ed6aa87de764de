"""The decision for one image in one job context: integrity → X.509 → signer rule →
revocation → action. Every edge (CLI, prolog, shim, SPANK helper) calls `decide` and
prints the Verdict its own way."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
import time
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sifguard.enforce import audit
from sifguard.enforce.image_cache import ImageCache, decode_chain, encode_chain
from sifguard.errors import BadInputError
from sifguard.integrity.verify import VERIFIED, Trust, verify_image
from sifguard.policy.decide import JobContext, match_rule, signer_allowed
from sifguard.policy.model import Policy, Rule
from sifguard.sif.image import Progress, SifImage
from sifguard.x509 import keys
from sifguard.x509.chain import ChainError, build_path, fingerprint, identity


@dataclass
class Verdict:
    image: str
    allowed: bool = False
    decision: str = "refuse"          # allow | refuse | audit (allowed although it would be refused)
    rule: str = ""
    action: str = "enforce"
    reason: str = ""
    signers: list = field(default_factory=list)
    revocation: list = field(default_factory=list)
    revocation_source: str = ""
    image_cache: str = "miss"          # hit | miss | off
    context: dict = field(default_factory=dict)
    elapsed_ms: float = 0.0
    digests: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"image": self.image, "allowed": self.allowed, "verified": self.allowed,
                "decision": self.decision, "rule": self.rule, "action": self.action, "reason": self.reason,
                "signers": self.signers, "revocation": self.revocation,
                "revocation_source": self.revocation_source, "image_cache": self.image_cache,
                "context": self.context, "elapsed_ms": round(self.elapsed_ms, 1)}


def _load_certs(paths) -> tuple[x509.Certificate, ...]:
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


class Engine:
    """A policy loaded once (roots parsed, revocation checker ready) for many decisions."""

    def __init__(self, policy: Policy, checker=None):
        self.policy = policy
        self.roots = _load_certs(policy.roots)
        self.intermediates = _load_certs(policy.intermediates)
        ders = sorted(r.public_bytes(serialization.Encoding.DER) for r in self.roots)
        self.roots_id = hashlib.sha256(b"".join(ders)).hexdigest()
        self.image_cache = ImageCache(policy.image_cache, self.roots_id)
        self._checker = checker

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
        sealed copy) while rules match `image`, the path the user named."""
        t0 = time.monotonic()
        self._use_cache = cache
        real = os.path.realpath(image) if fd is None else image
        v = Verdict(image=real, context=ctx.as_dict())
        rule = match_rule(self.policy, real, ctx)
        v.rule, v.action = rule.name, rule.action
        try:
            self._evaluate(v, rule, image, fd, progress)
        finally:
            if not v.revocation_source and v.revocation:
                v.revocation_source = ", ".join(sorted({r["source"] for r in v.revocation}))
            if rule.action == "audit" and not v.allowed:
                v.allowed, v.decision = True, "audit"
                v.reason = f"audit rule '{rule.name}': would refuse: {v.reason}"
            elif v.allowed:
                v.decision = "allow"
            v.elapsed_ms = (time.monotonic() - t0) * 1000
            if log:
                self._log(v)
        return v

    def _evaluate(self, v: Verdict, rule: Rule, image: str, fd: int | None, progress) -> None:
        if rule.require == "any":
            v.allowed, v.reason = True, f"rule '{rule.name}' does not require a signature"
            return
        groups = self._verified_groups(v, image, fd, progress)
        if groups is None:
            return
        now = dt.datetime.now(dt.timezone.utc)
        mode = rule.revocation_mode or self.policy.revocation.mode
        memo: dict = {}
        soft_notes = []
        for g, sigs in sorted(groups.items()):
            allowed_paths, seen = [], []
            for s in sigs:
                chain = decode_chain(s["chain"])
                try:
                    path = build_path(chain[0], list(chain[1:]) + list(self.intermediates), list(self.roots), now)
                except ChainError as e:
                    seen.append(f"{chain[0].subject.rfc4514_string()} ({e})")
                    continue
                who = identity(path[0], path)
                issuers = tuple(fingerprint(c) for c in path[1:])
                info = who.as_dict() | {"group": g}
                if not signer_allowed(rule, who, issuers):
                    seen.append(f"{who.subject}" + (f" <{', '.join(who.emails)}>" if who.emails else ""))
                    continue
                allowed_paths.append((path, info))
            if not allowed_paths:
                v.reason = (f"group {g}: signed by {'; '.join(seen)}, which rule '{rule.name}' does not allow"
                            if seen else f"group {g}: no trusted signature")
                return
            if mode == "off":
                v.signers.append(allowed_paths[0][1])
                v.revocation_source = "off"
                continue
            verdicts = []
            for path, info in allowed_paths:
                statuses = []
                for i in range(len(path) - 1):
                    k = (path[i].serial_number, fingerprint(path[i + 1]))
                    if k not in memo:
                        memo[k] = self.checker.check(path[i], path[i + 1])
                    statuses.append(memo[k])
                verdicts.append((path, info, statuses))
            good = [x for x in verdicts if all(s.status == "good" for s in x[2])]
            if good:
                path, info, statuses = good[0]
                v.signers.append(info)
                v.revocation += [s.as_dict() for s in statuses]
                continue
            worst = [s for x in verdicts for s in x[2] if s.status != "good"]
            revoked = [s for s in worst if s.status == "revoked"]
            unknown = [s for s in worst if s.status == "unknown"]
            v.revocation += [s.as_dict() for s in worst]
            if revoked:
                v.reason = f"group {g}: signer certificate {revoked[0].subject} is revoked: {revoked[0].reason}"
                return
            if unknown:
                v.reason = f"group {g}: revocation status of {unknown[0].subject} is unknown to its responder"
                return
            if mode == "enforce":
                v.reason = (f"group {g}: revocation status of {worst[0].subject} could not be established "
                            f"(revocation.mode enforce): {worst[0].reason}")
                return
            soft_notes.append(f"{worst[0].subject}: {worst[0].reason}")
            v.signers.append(verdicts[0][1])
        sources = sorted({r["source"] for r in v.revocation if r.get("source")})
        v.revocation_source = v.revocation_source or (", ".join(sources) if sources else "none")
        v.allowed = True
        who = "; ".join(s["subject"] for s in v.signers)
        v.reason = f"signed by {who}; rule '{rule.name}'"
        if soft_notes:
            v.reason += f"; revocation not established (soft-fail): {'; '.join(soft_notes)}"
            v.revocation_source = "soft-fail"
        elif mode == "off":
            v.reason += "; revocation not checked (mode off)"

    def _verified_groups(self, v: Verdict, image: str, fd: int | None, progress) -> dict | None:
        """{group: [ {chain: [...]} ]} of signatures whose integrity verified, via the image cache."""
        with SifImage(image if fd is None else f"/proc/self/fd/{fd}") as img:
            st = img.stat
            use = self.policy.image_cache and self._use_cache
            hit = self.image_cache.get(st) if use else None
            v.image_cache = "off" if not use else ("hit" if hit else "miss")
            if hit:
                v.digests = hit.get("digests", {})
                return {int(g): s for g, s in hit["groups"].items()}
            rep = verify_image(img, Trust(roots=self.roots, intermediates=self.intermediates), progress=progress)
        if not rep.verified:
            v.reason = rep.reason
            v.signers = [s.signer.as_dict() | {"group": s.group, "status": s.status}
                         for s in rep.signatures if s.signer]
            return None
        groups: dict = {}
        for s in rep.signatures:
            if s.status == VERIFIED and s.chain:
                groups.setdefault(s.group, []).append({"chain": encode_chain(s.chain), "keyid": s.keyid,
                                                       "algorithm": s.algorithm})
        v.digests = {str(k): d for k, d in rep.digests.items()}
        if self.policy.image_cache and self._use_cache:
            self.image_cache.put(st, {str(g): s for g, s in groups.items()}, v.digests)
        return groups

    def _log(self, v: Verdict) -> None:
        rec = {"time": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
               "host": socket.gethostname(), "pid": os.getpid(), "uid": os.getuid()} | v.as_dict()
        try:
            audit.append(self.policy.audit_log, rec)
        except audit.AuditError as e:
            v.audit_error = str(e)
