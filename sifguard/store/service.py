"""What the stager does for one request, apart from the socket: stage the image sent as
a descriptor, decide it under the policy the request names, record the decision.

Nothing in a request is believed except as a *key*: the image's content is what the
stager read from the descriptor; the policy must be a root-owned file nobody else can
change; the image path and job context only choose the candidate rules, and a decision
is recorded under (content digest, policy fingerprint, candidate rules) — so a caller
who lies about its path or context records a decision for inputs it does not have,
which no honest hook will ever look up.
"""

from __future__ import annotations

import os
import pwd
import grp
import stat
import threading
import time
from dataclasses import dataclass

from sifguard.errors import BadInputError, SifguardError
from sifguard.policy.decide import UNKNOWN, JobContext, candidate_rules
from sifguard.store import keys, records
from sifguard.store.layout import Store, StoreError
from sifguard.store import acl
from sifguard.store.stage import Stager, publicly_readable

DECISION_TTL = 300.0


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


def check_policy_file(path: str) -> None:
    """A policy the stager will load: an absolute path to a regular file that root owns and
    no one else can change, in directories only root can change."""
    if not isinstance(path, str) or not os.path.isabs(path):
        raise BadInputError("policy must be an absolute path")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise BadInputError(f"policy {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise BadInputError(f"policy {path} is not a root-owned regular file that only root can write")
    d = os.path.dirname(path)
    while True:
        dst = os.stat(d)
        if dst.st_uid != 0 or (dst.st_mode & 0o022 and not dst.st_mode & stat.S_ISVTX):
            raise BadInputError(f"policy {path}: directory {d} can be changed by someone other than root")
        if d == "/":
            break
        d = os.path.dirname(d)


def check_readable_by_all(path: str) -> None:
    """For a request from a user: the policy named must be a file every user can read (each
    directory on its real path searchable by all, the file readable by all). The stager is
    root: it must not load — and quote, in a parse error — a file the asker could not read
    (/etc/shadow names a root-owned file too). One answer for every failure, so it says
    nothing about paths the asker cannot see either."""
    if not isinstance(path, str) or not os.path.isabs(path):
        raise BadInputError("policy must be an absolute path")
    refused = BadInputError(f"policy {path} is not a file every user can read: not used")
    d = "/"
    for part in os.path.realpath(path).split("/")[1:]:
        try:
            st = os.stat(d)
        except OSError:
            raise refused from None
        if not stat.S_ISDIR(st.st_mode) or not st.st_mode & 0o001:
            raise refused
        d = os.path.join(d, part)
    try:
        st = os.stat(d)
    except OSError:
        raise refused from None
    if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o004:
        raise refused


class Service:
    def __init__(self, store: Store, durable: bool = True, max_size: int | None = None,
                 decision_ttl: float = DECISION_TTL):
        self.store = store
        self.stager = Stager(store, durable, max_size)
        self.decision_ttl = decision_ttl
        self._engines: dict[str, tuple[tuple, object, str]] = {}
        self._lock = threading.Lock()

    def engine(self, policy_path: str):
        """(engine, policy fingerprint) for a policy file, reloaded when it changes."""
        check_policy_file(policy_path)
        st = os.stat(policy_path)
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        from sifguard.enforce.decide import Engine
        from sifguard.policy.loader import load_fast
        with self._lock:
            got = self._engines.get(policy_path)
        if got and got[0] == ident:
            engine = got[1]
            fp = keys.policy_fingerprint(engine.policy)     # trust files may change without the policy
            if fp == got[2]:
                return engine, fp
        pol = load_fast(policy_path)
        engine = Engine(pol)
        fp = keys.policy_fingerprint(pol)
        with self._lock:
            self._engines[policy_path] = (ident, engine, fp)
        return engine, fp

    def admit(self, fd: int, peer: Peer, policy_path: str | None, image_path: str, context: dict) -> dict:
        """Stage the image and, with a policy, decide it. The reply (JSON-ready); for an
        allowed image whose copy is private (its source is not readable by everyone), the
        asking user is let read that copy: they proved they can read the source by sending it."""
        who = {"uid": peer.uid, "pid": peer.pid}
        public = publicly_readable(fd)
        if not policy_path:
            if peer.uid != 0:    # only root stages without deciding (a user could fill the disk with copies)
                raise BadInputError("a request must name the site policy to decide the image under")
            s = self.stager.stage(fd, who=who, keep=lambda found: True, public=public)
            return {"ok": True, "digest": s.digest, "object": s.object_path, "how": s.how,
                    "bytes_hashed": s.bytes_hashed, "copies": s.copies, "public": public}
        if peer.uid != 0:
            check_readable_by_all(policy_path)
        engine, fp = self.engine(policy_path)
        ctx = self.context(peer, context)
        rules = candidate_rules(engine.policy, image_path, ctx)
        decided = {}

        def allowed(found: dict | None) -> bool:        # keep a copy of what this request may run
            findings = engine.findings_from_record(found or {"verified": False, "reason": "not verified"})
            decided["v"] = (engine.decide_findings(image_path, ctx, findings, rules), findings)
            return decided["v"][0].allowed
        s = self.stager.stage(fd, engine.verifier(), engine.roots_id, keep=allowed, who=who, public=public)
        if "v" not in decided:
            allowed(s.findings)
        v, findings = decided["v"]
        if v.allowed and not s.object_path:     # indexed earlier without a copy (refused then, e.g. another rule)
            s = self.stager.stage(fd, engine.verifier(), engine.roots_id, keep=lambda found: True, who=who,
                                  require_object=True, public=public)
        reply = {"ok": True, "digest": s.digest, "object": s.object_path, "how": s.how,
                 "bytes_hashed": s.bytes_hashed, "copies": s.copies, "verdict": v.as_dict(),
                 "allowed": v.allowed, "policy": fp, "candidates": [r.name for r in rules]}
        if v.allowed and s.object_path:
            until = engine.valid_until(v, findings, self.decision_ttl)
            if until > time.time():
                self.record_decision(s.digest, fp, tuple(r.name for r in rules), v.as_dict(), until)
            reply["valid_until"] = until
            if not public:
                reply["access"] = self.grant(s.object_path, peer, ctx)
        return reply

    @staticmethod
    def grant(obj: str, peer: Peer, ctx: JobContext) -> str:
        """A private copy (its source is not readable by everyone): let the user who proved
        they can read the source read the copy (a named ACL entry). Root asks on behalf of
        the job's user (the controller prolog). "" when granted or public, else why not."""
        if os.stat(obj).st_mode & 0o004:
            return ""                                   # public content
        uid = peer.uid
        if uid == 0 and isinstance(ctx.user, str):
            try:
                uid = pwd.getpwnam(ctx.user).pw_uid
            except KeyError:
                return f"unknown user {ctx.user!r}"
        if uid == 0:
            return ""
        try:
            acl.grant_read(obj, uid)
        except OSError as e:
            return f"cannot let uid {uid} read the private copy: {e.strerror or e}"
        return ""

    def record_decision(self, digest: str, fp: str, candidates: tuple[str, ...], verdict: dict,
                        until: float) -> None:
        key = keys.decision_key(digest, fp, candidates)
        records.write(self.store.decision_path(key), {
            "digest": digest, "policy": fp, "candidates": list(candidates), "verdict": verdict,
            "valid_until": until, "decided_at": time.time()}, durable=False)

    @staticmethod
    def context(peer: Peer, fields: dict) -> JobContext:
        """The job context a decision is made for. The user and group are the peer's own
        (SO_PEERCRED) unless root asks on a user's behalf (the controller prolog); account
        and partition come from the request and only choose candidate rules."""
        def val(k):
            v = fields.get(k)
            if v == "(unknown)":
                return UNKNOWN
            return v if isinstance(v, str) and len(v) < 256 else None
        user, group = val("user"), val("group")
        if peer.uid != 0:
            try:
                user = pwd.getpwuid(peer.uid).pw_name
            except KeyError:
                user = str(peer.uid)
            try:
                group = grp.getgrgid(peer.gid).gr_name
            except KeyError:
                group = str(peer.gid)
        job = fields.get("job_id")
        return JobContext(user=user, group=group, account=val("account"), partition=val("partition"),
                          job_id=job if isinstance(job, str) and len(job) < 64 else None)


def error_reply(e: BaseException) -> dict:
    if isinstance(e, SifguardError):
        return {"ok": False, "error": str(e), "refused": isinstance(e, StoreError)}
    return {"ok": False, "error": f"{type(e).__name__}: {e}"}


__all__ = ["Service", "Peer", "check_policy_file", "error_reply", "StoreError"]
