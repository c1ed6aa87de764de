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
HELD = "_held_fd"      # reply key (never sent): the descriptor the server passes with the reply


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


POLICY_MAX = 1 << 20     # the loader reads at most this much of a policy


class PolicyUnusable(BadInputError):
    """A policy the stager will not load for this caller. The caller sees only that: what
    the loader said about the file (its lines, whether it exists) stays in the stager's
    log, since the stager reads files the caller cannot."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


def check_policy_file(path: str, readable_by_all: bool = False) -> str:
    """The canonical path of a policy the stager will load: a regular file that root owns
    and no one else can change, reached through directories that are not symlinks, that
    root owns and that no one else can change (a sticky directory keeps root's entries
    root's). Every later use goes through this path, so once checked it names the same
    file whatever the caller's symlinks do (the request's own path is resolved once,
    here, and never again).

    `readable_by_all` (a request from a user): first, the file must be one every user can
    read (each directory on its real path searchable by all, the file readable by all).
    The stager is root: it must not load — and quote, in a parse error — a file the asker
    could not read (/etc/shadow names a root-owned file too). One answer for every failure
    of that, so it says nothing about paths the asker cannot see either."""
    if not isinstance(path, str) or not os.path.isabs(path) or "\0" in path:
        raise BadInputError("policy must be an absolute path")
    unreadable = PolicyUnusable(f"policy {path[:256]} is not a file every user can read: not used")
    real = os.path.realpath(path)
    parts = [p for p in real.split("/") if p]
    walk = []                                   # (path, lstat or the OSError), / first, the file last
    here = "/"
    for name in ["", *parts]:
        here = os.path.join(here, name) if name else "/"
        try:
            walk.append((here, os.lstat(here)))
        except OSError as e:
            walk.append((here, e))
            break
    if readable_by_all:
        for i, (here, st) in enumerate(walk):
            last = i == len(parts)
            if isinstance(st, OSError) or (not last and not (stat.S_ISDIR(st.st_mode) and st.st_mode & 0o001)) \
                    or (last and not (stat.S_ISREG(st.st_mode) and st.st_mode & 0o004)):
                raise unreadable
    for i, (here, st) in enumerate(walk):
        if isinstance(st, OSError):
            raise BadInputError(f"policy {path}: {st.strerror}") from None
        last = i == len(parts)
        if stat.S_ISLNK(st.st_mode) or st.st_uid != 0 or (not last and not stat.S_ISDIR(st.st_mode)):
            raise BadInputError(f"policy {path}: {here} is not a root-owned directory or file (or changed while "
                                "it was checked)")
        if not last and st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise BadInputError(f"policy {path}: directory {here} can be changed by someone other than root")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise BadInputError(f"policy {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise BadInputError(f"policy {path} is not a root-owned regular file that only root can write")
    if st.st_size > POLICY_MAX:
        raise BadInputError(f"policy {path} is over {POLICY_MAX} bytes")
    return real


class Service:
    def __init__(self, store: Store, durable: bool = True, max_size: int | None = None,
                 decision_ttl: float = DECISION_TTL, per_user_bytes: int | None = None):
        self.store = store
        self.stager = Stager(store, durable, max_size, per_user_bytes)
        self.decision_ttl = decision_ttl
        self._engines: dict[str, tuple[tuple, object, str]] = {}
        self._lock = threading.Lock()

    def engine(self, policy_path: str, readable_by_all: bool = False):
        """(engine, policy fingerprint) for a policy file, reloaded when it changes. The
        file is loaded by its canonical, root-only path, never by the caller's spelling."""
        policy_path = check_policy_file(policy_path, readable_by_all)
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
        """Stage the image and, with a policy, decide it. The reply (JSON-ready). An allowed
        image's copy comes marked in use (reply[HELD], a descriptor the server sends with the
        reply: no collection between answer and run); a private copy (its source is not
        readable by everyone) is let read by the asking user, who proved they can read the
        source by sending it."""
        who = {"uid": peer.uid, "pid": peer.pid}
        public = publicly_readable(fd)
        if not policy_path:
            if peer.uid != 0:
                # without a policy nothing is verified and the copy is kept regardless: only root
                # (`store stage`, a curated catalogue) may fill the store with unverified images
                raise BadInputError("a request must name the site policy the image is decided under")
            s = self.stager.stage(fd, who=who, keep=lambda found: True, public=public)
            return {"ok": True, "digest": s.digest, "object": s.object_path, "how": s.how,
                    "bytes_hashed": s.bytes_hashed, "copies": s.copies, "public": public}
        try:
            engine, fp = self.engine(policy_path, readable_by_all=peer.uid != 0)
        except (SifguardError, OSError, ValueError) as e:
            if peer.uid == 0 or isinstance(e, PolicyUnusable):
                raise
            shown = policy_path if isinstance(policy_path, str) else type(policy_path).__name__
            raise PolicyUnusable(f"policy {shown[:256]!r} is not a policy this stager can use (the stager's "
                                 "log says why)", detail=str(e)) from None
        ctx = self.context(peer, context)
        rules = candidate_rules(engine.policy, image_path, ctx)
        # an unverified copy (allowed by a rule that needs no signature, or an audit rule) is kept
        # only for a path the caller really opened: the path in a request chooses rules (a lie
        # decides nothing anyone else looks up) but must not let a user keep arbitrary bytes
        confirmed = peer.uid == 0 or self._opened_at(fd, image_path)

        last: list = [None, None]          # (findings record, its verdict): keep() and the answer decide once

        def decide(found: dict | None):
            if last[0] is not found or found is None:
                findings = engine.findings_from_record(found or {"verified": False, "reason": "not verified"})
                last[:] = [found, (engine.decide_findings(image_path, ctx, findings, rules), findings)]
            return last[1]

        def keep(found: dict | None) -> bool:          # a copy of what this request may run
            if not decide(found)[0].allowed:
                return False
            if bool(found and found.get("verified")) or peer.uid == 0:
                return True
            # unverified bytes: only at a path the caller really opened, and allowed whatever the
            # job attributes the stager cannot confirm (account, partition) — every rule they
            # could select must allow, as when a hook cannot establish them
            if not confirmed:
                return False
            unsure = JobContext(user=ctx.user, group=ctx.group, account=UNKNOWN, partition=UNKNOWN)
            findings = engine.findings_from_record(found or {"verified": False, "reason": "not verified"})
            return engine.decide_findings(image_path, unsure, findings,
                                          candidate_rules(engine.policy, image_path, unsure)).allowed
        from sifguard.store.lookup import open_entry
        entry = None
        for _ in range(3):
            s = self.stager.stage(fd, engine.verifier(), engine.roots_id, keep=keep, who=who, public=public)
            v, findings = decide(s.findings)
            if v.allowed and not s.object_path and keep(s.findings):
                # indexed earlier without a copy (refused then, under another rule or context)
                s = self.stager.stage(fd, engine.verifier(), engine.roots_id, keep=keep, who=who,
                                      require_object=True, public=public)
            # the copy, marked in use before anything is answered
            entry = open_entry(self.store, s.digest) if s.object_path else None
            if entry is not None or s.object_path is None:
                break                  # (else collected since it was staged: the index misses now, stage again)
        try:
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
                if entry is not None:
                    reply[HELD], entry = entry.fd, None
        finally:
            if entry is not None:
                os.close(entry.fd)
        return reply

    @staticmethod
    def grant(obj: str, peer: Peer, ctx: JobContext) -> str:
        """A private copy (its source is not readable by everyone): let the user who proved
        they can read the source read the copy (a named ACL entry). Root asks on behalf of
        the job's user (the controller prolog). "" when granted or public, else why not."""
        try:
            if os.stat(obj).st_mode & 0o004:
                return ""                               # public content
        except OSError as e:
            return f"the stored copy is gone ({e.strerror})"      # collected meanwhile
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

    @staticmethod
    def _opened_at(fd: int, image_path: str) -> bool:
        """Is the file open as `fd` the one at `image_path` in the stager's mount namespace?"""
        from sifguard.slurm.gate import opened_path
        try:
            return bool(image_path) and opened_path(fd) == image_path
        except OSError:
            return False

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


__all__ = ["Service", "Peer", "PolicyUnusable", "check_policy_file", "error_reply", "StoreError"]
