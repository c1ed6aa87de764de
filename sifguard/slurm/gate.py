"""The one gate every Slurm hook calls (controller prolog, runtime shim, SPANK helper).

    job context (from a trusted source) + parsed runtime invocation
      → image source rule (URI schemes)
      → open the image once, as the job's user, non-blocking, regular files only
      → the rule is chosen from the path of what was opened (never re-resolved)
      → optionally pin the bytes (sealed copy) and verify exactly those
      → decide (enforce/decide.py → enforce/core.py) → one audit record

Hooks differ only in where their context comes from and how they report; what is
allowed is decided here, once, the same way for all of them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import time
from dataclasses import dataclass, field
TYPE_CHECKING = False   # (no `typing` import at run time: the shim starts once per task)

from sifguard.enforce import audit, pin
from sifguard.errors import SifguardError
from sifguard.policy.decide import JobContext
from sifguard.policy.model import Policy
from sifguard.slurm import runtime_argv

if TYPE_CHECKING:   # the engine (cryptography) is imported only when an image is decided
    from sifguard.enforce.core import Verdict
    from sifguard.enforce.decide import Engine

OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@dataclass(frozen=True)
class Admission:
    allowed: bool
    message: str                       # one line: why refused, or what was allowed
    verdict: Verdict | None = None     # when an image was decided
    pinned_fd: int | None = None       # the sealed copy to run (pin=True and allowed)
    image_index: int | None = None     # argv index of the image operand to replace
    decision: str = ""                 # allow | refuse | audit | pass (no image involved)
    run_path: str | None = None        # the verified store copy to run instead (pin=True, store)
    held_fd: int | None = None         # read-only fd on run_path holding its in-use lock


@dataclass(frozen=True)
class StoreAccess:
    """The verified image store, as a hook reaches it."""

    directory: str
    socket: str = ""
    policy_path: str = ""              # the policy file the stager is asked to decide under
    timeout: float = 600.0             # a cold staging reads the whole image once


@dataclass
class Gate:
    policy: Policy
    hook: str                                   # prolog-slurmctld | shim | spank | …
    seal_limit: int = pin.DEFAULT_LIMIT
    as_user: tuple[int, int] | None = None      # root hooks: open images with this uid/gid
    audit_extra: dict = field(default_factory=dict)
    store: StoreAccess | None = None            # pin through the verified image store
    store_problem: str = ""                     # why the store could not pin (for the fallback's message)
    _engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from sifguard.enforce.decide import Engine
            self._engine = Engine(self.policy)
        return self._engine

    # --- what to run ----------------------------------------------------------------
    def admit(self, inv: runtime_argv.Invocation, ctx: JobContext, cwd: str, pin_image: bool = False,
              **audit_fields) -> Admission:
        """May this runtime invocation run? (The command line was parsed by the caller with
        the runtime's own flag table; anything it could not parse is refused here.)"""
        if inv.error:
            return self._refuse_event(f"{inv.tool} command line not understood, so which image it would run is "
                                      f"unknown: {inv.error}", ctx, audit_fields)
        if not inv.runs_image:
            if runtime_argv.is_build_or_pull(inv):
                rt = self.policy.runtime
                if not (rt.allow_build if inv.command == "build" else rt.allow_pull):
                    return self._refuse_event(f"'{inv.tool} {inv.command}' is not allowed on this cluster by the "
                                              "site policy", ctx, audit_fields)
            return Admission(True, f"'{inv.tool} {inv.command}' runs no image", decision="pass")
        if not inv.image:
            return self._refuse_event(f"'{inv.tool} {inv.command}' without an image operand", ctx, audit_fields)
        extra = {k: list(v) for k, v in (("extra_images", inv.extra_images),
                                         ("outside_content", inv.outside_content)) if v}
        adm = self.admit_image(inv.image, ctx, cwd, pin_image, flavor=inv.flavor,
                               command=f"{inv.tool} {inv.command}", **extra, **audit_fields)
        return dataclasses.replace(adm, image_index=inv.image_index)

    def admit_image(self, operand: str, ctx: JobContext, cwd: str, pin_image: bool = False,
                    missing: str = "refuse", flavor: str | None = None, stage: bool = False,
                    **audit_fields) -> Admission:
        """Decide one image operand: a URI by its source rule, a file by its signatures.
        `missing="defer"` (the controller prolog, ahead of the job): an image that does not
        exist yet is logged as deferred to the runtime hooks instead of refused.
        `stage` (the controller prolog): decide through the image store when one is
        configured, so the job's tasks find the image staged and decided (they start warm)."""
        scheme = image_source(operand, flavor)
        if scheme != "local":
            if scheme in self.policy.runtime.allow_sources:
                self._event("allow", ctx, audit_fields | {"image": operand,
                                                          "reason": f"source '{scheme}' allowed by the site policy"})
                return Admission(True, f"image source '{scheme}' is allowed", decision="allow")
            return self._refuse_event(f"{operand}: image source '{scheme}' is not allowed by the site policy",
                                      ctx, audit_fields | {"image": operand})
        path = operand if os.path.isabs(operand) else os.path.join(cwd, operand)
        try:
            fd = self._open(path)
        except FileNotFoundError:
            if missing == "defer":
                self.defer(ctx, "image does not exist yet: left to the runtime hooks", **audit_fields, image=operand)
                return Admission(True, f"{operand}: does not exist yet (deferred)", decision="deferred")
            return self._refuse_event(f"{operand}: no such file", ctx, audit_fields | {"image": operand})
        except OSError as e:
            return self._refuse_event(f"{operand}: cannot read it as the job's user ({e.strerror or e})",
                                      ctx, audit_fields | {"image": operand})
        pinned = None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                what = "a directory (sandboxes carry no signature)" if stat.S_ISDIR(st.st_mode) else "not a regular file"
                return self._refuse_event(f"{operand}: {what}", ctx, audit_fields | {"image": operand})
            opened = opened_path(fd)
            if opened is None:
                return self._refuse_event(f"{operand}: the file opened is not at its path in this mount namespace "
                                          "(another namespace's view through /proc or a passed descriptor, or "
                                          "moved/removed while being checked)", ctx, audit_fields | {"image": operand})
            if (pin_image or stage) and self.store is not None:
                via_store = self._via_store(fd, st, opened, operand, ctx, audit_fields)
                if via_store is not None:
                    if not pin_image:                      # staged for the tasks; nothing runs here
                        for held in (via_store.held_fd, via_store.pinned_fd):
                            if held is not None:
                                os.close(held)
                        via_store = dataclasses.replace(via_store, held_fd=None, pinned_fd=None)
                    return via_store
            if pin_image:
                pinned = self._sealed_copy(fd)
            # a sealed copy is a new inode every time: the verified-image cache (keyed by the
            # file's identity) could never hit, so it is neither read nor written for it
            v = self.engine.decide(opened, ctx, fd=pinned if pinned is not None else fd, log=False,
                                   cache=pinned is None)
        except SifguardError as e:
            if pinned is not None:
                os.close(pinned)
            return self._refuse_event(f"{operand}: {e}", ctx, audit_fields | {"image": operand})
        except Exception as e:  # noqa: BLE001 - never a traceback in a hook: refuse in one line
            if pinned is not None:
                os.close(pinned)
            return self._refuse_event(f"{operand}: {type(e).__name__}: {e}", ctx, audit_fields | {"image": operand})
        finally:
            os.close(fd)
        self._log(v, audit_fields | {"operand": operand})
        if not v.allowed:
            if pinned is not None:
                os.close(pinned)
            return Admission(False, f"{operand}: rule '{v.rule}': {v.reason}", v, decision=v.decision)
        return Admission(True, f"{operand}: {v.reason}", v, pinned, decision=v.decision)

    def defer(self, ctx: JobContext, reason: str, **audit_fields) -> None:
        """An image this hook cannot see with certainty: logged, left to the later hooks."""
        self._event("deferred", ctx, audit_fields | {"reason": reason})

    def refuse_direct(self, what: str, ctx: JobContext, **audit_fields) -> Admission | None:
        """The runtime (or a SIF) reached without the shim, described by `what`: refused,
        unless the policy says `runtime.direct: check` (then None: decide the image)."""
        if self.policy.runtime.direct == "check":
            return None
        return self._refuse_event(f"{what}; run `apptainer …` by name so sifguard can pin the verified image "
                                  "(site policy runtime.direct: refuse)", ctx, audit_fields)

    def refuse(self, reason: str, ctx: JobContext, **audit_fields) -> Admission:
        return self._refuse_event(reason, ctx, audit_fields)

    # --- pinning ----------------------------------------------------------------------
    def _via_store(self, fd: int, st: os.stat_result, opened: str, operand: str, ctx: JobContext,
                   audit_fields: dict) -> Admission | None:
        """Pin through the store: warm (a recorded decision for this content, policy and
        candidate rules: no hashing, no cryptography), else cold (the stager stages and
        decides). None: no stager answers and nothing is recorded → the sealed-copy fallback."""
        from sifguard.store import keys, lookup
        from sifguard.store.layout import Store, StoreError, UnsafeStore
        from sifguard.policy.decide import candidate_rules
        t0 = time.monotonic()
        store = Store(self.store.directory)
        fields = audit_fields | {"operand": operand}
        try:
            store.check_safe()
        except UnsafeStore as e:          # someone other than root could change it: never used
            return self._refuse_event(f"{operand}: {e}", ctx, fields | {"image": opened})
        except StoreError as e:           # not there (yet): as if no stager ran — the sealed-copy fallback
            self.store_problem = str(e)
            return None
        names = tuple(r.name for r in candidate_rules(self.policy, opened, ctx))
        try:
            fp = keys.policy_fingerprint(self.policy)
        except OSError:
            fp = None                      # trust files unreadable to this user: ask the stager
        warm = lookup.warm(store, fd, st, fp, names) if fp else None
        if warm is not None:
            entry, rec = warm
            v = lookup.RecordedVerdict(rec["verdict"] | {
                "image": opened, "context": ctx.as_dict(), "image_cache": "store",
                "store": {"digest": entry.digest, "how": "recorded"},
                "elapsed_ms": round((time.monotonic() - t0) * 1000, 1)})
            self._log(v, fields)
            return Admission(True, f"{operand}: {v.reason}", v, decision=v.decision, run_path=entry.path,
                             held_fd=entry.fd)
        if not self.store.socket:
            self.store_problem = "no stager socket is configured"
            return None
        from sifguard.store import client
        try:
            reply, held = client.ask_held(self.store.socket, fd, {"policy": self.store.policy_path, "path": opened,
                                                                 "context": ctx.as_dict()}, timeout=self.store.timeout)
        except client.StagerUnavailable as e:
            self.store_problem = str(e)
            return None
        except client.StagerRefused as e:
            return self._refuse_event(f"{operand}: {e}", ctx, fields | {"image": opened})
        box = [held]            # the copy the stager marked in use for us: given to the admission or closed
        try:
            return self._from_reply(reply, box, store, opened, operand, ctx, fields, t0)
        finally:
            if box[0] is not None:
                os.close(box[0])

    def _from_reply(self, reply: dict, box: list, store, opened: str, operand: str, ctx: JobContext,
                    fields: dict, t0: float) -> Admission | None:
        """An admission from the stager's reply; box[0], the descriptor it sent, is taken
        (box[0] = None) only by an entry that is given to the admission."""
        from sifguard.store import lookup
        verdict = reply.get("verdict") if isinstance(reply.get("verdict"), dict) else {}
        if verdict.get("allowed") and not reply.get("object"):
            # allowed without verifying (an audit rule, or a path the stager could not confirm):
            # the store keeps only what it may, so this run pins its own sealed copy instead
            self.store_problem = "the stager allowed the image without keeping a copy of it"
            return None
        v = lookup.RecordedVerdict(verdict | {
            "image": opened, "context": ctx.as_dict(), "image_cache": "store",
            "store": {"digest": reply.get("digest"), "how": reply.get("how")},
            "elapsed_ms": round((time.monotonic() - t0) * 1000, 1)})
        if not v.allowed:
            self._log(v, fields)
            return Admission(False, f"{operand}: rule '{v.rule}': {v.reason}", v, decision=v.decision)
        digest = str(reply.get("digest") or "0")
        held, box[0] = box[0], None
        if reply.get("access"):         # a private copy this user could not be let read: the sealed copy
            if held is not None:
                os.close(held)
            self.store_problem = f"the store's verified copy cannot be opened: {reply['access']}"
            return None
        entry = lookup.held_entry(store, digest, held) if held is not None else lookup.open_entry(store, digest)
        if entry is None:               # collected or replaced meanwhile: the sealed copy
            self.store_problem = "the store's verified copy cannot be opened"
            return None
        self._log(v, fields)            # (a fallback above is logged by the sealed-copy decision instead)
        return Admission(True, f"{operand}: {v.reason}", v, decision=v.decision, run_path=entry.path,
                         held_fd=entry.fd)

    def _sealed_copy(self, fd: int) -> int:
        """The fallback where no store serves: a sealed in-memory copy, up to seal_limit."""
        try:
            return pin.sealed_copy(fd, self.seal_limit)
        except pin.CannotPin as e:
            if self.store is None:
                raise pin.CannotPin(f"{e}; configure the verified image store (`sifguard slurm install --store "
                                    "DIR --stager-socket PATH` and run `sifguard store serve`)") from None
            raise pin.CannotPin(f"{e}, and the image store cannot take it ({self.store_problem}): start the stager "
                                "(`systemctl enable --now sifguard-stager.socket`, or `sifguard store serve "
                                f"--store {self.store.directory} --socket {self.store.socket or 'PATH'}`)") from None

    # --- edges ----------------------------------------------------------------------
    def _open(self, path: str) -> int:
        if self.as_user is None:
            return os.open(path, OPEN_FLAGS)
        from sifguard.slurm.privileges import as_user
        with as_user(*self.as_user):
            return os.open(path, OPEN_FLAGS)

    def _log(self, v: Verdict, fields: dict) -> None:
        try:
            audit.write_decision(self.policy.audit_log, v, hook=self.hook, metrics=self.policy.metrics_textfile,
                                 **self.audit_extra, **fields)
        except audit.AuditError:
            pass   # the decision stands; the log's problem is reported by `slurm doctor`

    def _event(self, decision: str, ctx: JobContext, fields: dict) -> None:
        try:
            audit.write_event(self.policy.audit_log, metrics=self.policy.metrics_textfile, hook=self.hook,
                              decision=decision, context=ctx.as_dict(), **self.audit_extra, **fields)
        except audit.AuditError:
            pass

    def _refuse_event(self, reason: str, ctx: JobContext, fields: dict) -> Admission:
        self._event("refuse", ctx, fields | {"reason": reason})
        from sifguard.enforce.core import refusal
        return Admission(False, reason, refusal(fields.get("image", ""), reason, ctx.as_dict()), decision="refuse")


_RUNTIME_WORD = r"""[^\s'"`;|&()<>]*/(?:apptainer|singularity)(?=[\s'"`;|&()<>]|$)"""


def reaches_runtime_directly(found, shim_dir: str) -> bool:
    """Does this scanner finding reach the container runtime (or a SIF) without the shim?
    By bare name through the job's unchanged PATH it reaches the shim (the SPANK plugin and
    the TaskProlog put it first); by path, through a changed or ignored PATH (`PATH=…`,
    `env -i`, `env -u PATH`, `command -p`), named by path under a wrapper the scanner does not
    model, or a SIF executed directly, it does not."""
    if found.tool == "sif":
        return True
    if found.program and not found.via_path and not in_shim_dir(found.program, shim_dir):
        return True
    return any(not in_shim_dir(w, shim_dir) for w in re.findall(_RUNTIME_WORD, found.text))


def in_shim_dir(program: str, shim_dir: str) -> bool:
    """Is `program` (a path) one of the shims, symlinks resolved?"""
    return bool(shim_dir) and "/" in program and \
        os.path.dirname(os.path.realpath(program)) == os.path.realpath(shim_dir)


def image_source(operand: str, flavor: str | None = None) -> str:
    """`local` for a path; else the transport as the runtime splits the operand (`x://…`,
    or a known transport without `//` such as `docker:alpine`), case kept: `DOCKER://x` is
    an unknown transport to the runtime, and no policy source. Every hook classifies
    operands here, so they cannot disagree."""
    return runtime_argv.scheme_of(operand, flavor) or "local"


def opened_path(fd: int) -> str | None:
    """The path of the file `fd` holds, as the kernel resolved it when it was opened
    (symlinks followed once, at open) — and only if that path names the same file *in this
    process's mount namespace*. The kernel prints a file from another mount namespace
    (reached through /proc/PID/root, /proc/PID/fd, an fd passed over a socket, …) by its
    path *there*: an unprivileged user namespace or a running container can show any path
    for any file, so such a path must not choose a rule. None when it cannot be trusted
    (another namespace, unlinked, renamed away)."""
    p = os.readlink(f"/proc/self/fd/{fd}")
    if p.endswith(" (deleted)") or not p.startswith("/"):
        return None
    try:
        here = os.stat(p, follow_symlinks=False)
    except OSError:
        return None
    there = os.fstat(fd)
    if (here.st_dev, here.st_ino) != (there.st_dev, there.st_ino) or _mount_id_of_fd(fd) != _mount_id_of_path(p):
        return None
    return p


def _mount_id_of_fd(fd: int) -> str | None:
    try:
        with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as f:
            for line in f:
                if line.startswith("mnt_id:"):
                    return line.split()[1]
    except OSError:
        pass
    return None


def _mount_id_of_path(path: str) -> str | None:
    """The mount id of `path` in this namespace (through an O_PATH descriptor: no read,
    no open of a device or FIFO)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _mount_id_of_fd(fd)
    finally:
        os.close(fd)
