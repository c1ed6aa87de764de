"""Staging: the one transaction that puts an image into the store (root only).

    source fd (opened by whoever may read it) → regular file? → index hit? → done
      → else, under the source key's staging lock (concurrent requests wait on it):
        index hit now? (someone staged it meanwhile) → done
        → one pass: copy while hashing into an unnamed file (copy.py)
        → same content already stored? → drop the copy
        → else verify the copy's bytes (`verifier`), keep it only if they verify
          (or the caller stages unconditionally), fsync'd, linked in under its digest
        → findings, manifest, index written last (readers find nothing before that)

Findings of the same content under other trust roots are computed later from the copy
and its manifest's object digests: signatures only, no data re-hashed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sifguard.store import keys, locks, records
from sifguard.store.copy import copy_hashing
from sifguard.store.layout import Store, StoreError

# verifier(fd of the bytes, known object digests) -> findings record (dict with "verified")
Verifier = Callable[[int, dict], dict]
FREE_MARGIN = 64 << 20


class NotRegular(StoreError):
    exit_code = 2


@dataclass(frozen=True)
class Staged:
    digest: str
    object_path: str | None        # None: the content did not verify, so no copy is kept
    how: str                       # indexed | staged | waited | deduplicated
    size: int
    bytes_hashed: int = 0
    copies: int = 0
    findings: dict | None = None   # under the verifier's roots, when one was given


PUBLIC, PRIVATE = 0o444, 0o400


def publicly_readable(fd: int) -> bool:
    """Could every user on this node read the source open as `fd`? Its path (in this mount
    namespace, the same file) and every directory above it must give read/search to owner,
    group and others alike, with no ACL that could take them away. A stored copy of a
    source that is not public stays root's (0400) and each user who proves, by sending the
    source's descriptor, that they can read it gets a read entry (acl.py): a copy anyone
    could read would let whoever saw its path (it is in the runtime's argv, in /proc) read
    an image only its owner could."""
    from sifguard.slurm.gate import opened_path
    try:
        path = opened_path(fd)
        if path is None:
            return False
        st = os.fstat(fd)
        if st.st_mode & 0o444 != 0o444 or _has_acl(path):
            return False
        d = os.path.dirname(path)
        while True:
            dst = os.stat(d)
            if dst.st_mode & 0o111 != 0o111 or _has_acl(d):
                return False
            if d == "/":
                return True
            d = os.path.dirname(d)
    except OSError:
        return False


def _has_acl(path: str) -> bool:
    try:
        return "system.posix_acl_access" in os.listxattr(path)
    except OSError:
        return False       # no xattr support: no ACLs


def check_source(fd: int) -> os.stat_result:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or
                stat.S_ISBLK(st.st_mode) else "not a regular file")
        raise NotRegular(f"the image sent is {kind}, not a regular file: not staged")
    return st


class Stager:
    def __init__(self, store: Store, durable: bool = True, max_size: int | None = None,
                 per_user_bytes: int | None = None):
        self.store = store
        self.durable = durable
        self.max_size = max_size
        self.per_user_bytes = per_user_bytes   # bytes of copies one non-root uid may have kept (None: no bound)
        self.slots = None     # a semaphore bounding concurrent copies (the stager sets one)
        self.per_uid = None   # copies one (non-root) uid may run or wait for at once (the stager sets it)
        self._uids: dict[int, int] = {}
        self._uids_cv = threading.Condition()

    # --- lookups (no lock) -----------------------------------------------------------
    def indexed(self, key: str, st: os.stat_result) -> dict | None:
        from sifguard.store.lookup import index_record
        idx = index_record(self.store, key, st)
        if idx is None:
            return None
        digest = idx["digest"]
        try:
            if idx.get("stored") and not os.path.exists(self.store.object_path(digest)):
                return None            # collected since: stage again
        except StoreError:
            return None
        return idx

    def findings(self, digest: str, roots_id: str, verifier: Verifier | None) -> dict | None:
        """The findings for this content under these roots: recorded, or computed now from
        the stored copy with its manifest's digests (signatures only)."""
        rec = records.read(self.store.findings_path(digest, roots_id))
        if rec is not None or verifier is None:
            return rec
        man = records.read(self.store.manifest_path(digest))
        obj = self.store.object_path(digest)
        if man is None:
            return None
        try:
            fd = os.open(obj, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None            # collected meanwhile: the caller stages it again
        try:
            rec = verifier(fd, man.get("objects", {})) | {"digest": digest, "roots": roots_id}
        finally:
            os.close(fd)
        records.write(self.store.findings_path(digest, roots_id), rec, durable=self.durable)
        return rec

    # --- staging -------------------------------------------------------------------
    def stage(self, src: int, verifier: Verifier | None = None, roots_id: str = "",
              keep: Callable[[dict | None], bool] | None = None, who: dict | None = None,
              require_object: bool = False, public: bool = False) -> Staged:
        """Stage the image open as `src`. `keep(findings)` says whether to keep a copy
        (default: only one that verifies); `require_object`: an index hit whose copy was
        not kept does not count (stage again, keeping it)."""
        st = check_source(src)
        if self.max_size is not None and st.st_size > self.max_size:
            raise StoreError(f"image is {st.st_size / 2**30:.1f} GiB, over the store's "
                             f"{self.max_size / 2**30:.1f} GiB limit per image: not staged")
        key = keys.index_key(st, keys.read_head(src, st.st_size))
        keep = keep or (lambda found: bool(found and found.get("verified")))
        hit = self._hit(key, st, verifier, roots_id, "indexed", require_object)
        if hit is None:
            # a uid's turn first, then the source's lock: a user's queued requests wait here, holding
            # no staging lock other users' requests for a shared image would wait on
            with self._uid_turn((who or {}).get("uid")):
                with locks.staging_lock(self.store.lock_path(key)):
                    hit = self._hit(key, st, verifier, roots_id, "waited", require_object)
                    if hit is None:
                        hit = self._stage_locked(src, st, key, verifier, roots_id, keep, who or {})
        if public and hit.object_path:
            self._publish(hit.object_path)
        return hit

    @contextlib.contextmanager
    def _uid_turn(self, uid):
        """At most `per_uid` stagings of one non-root uid at once, so one user's images
        (however large) never take every copy slot from the others."""
        if self.per_uid is None or not isinstance(uid, int) or uid == 0:
            yield
            return
        with self._uids_cv:
            while self._uids.get(uid, 0) >= self.per_uid:
                self._uids_cv.wait()
            self._uids[uid] = self._uids.get(uid, 0) + 1
        try:
            yield
        finally:
            with self._uids_cv:
                left = self._uids[uid] - 1
                if left:
                    self._uids[uid] = left
                else:
                    del self._uids[uid]
                self._uids_cv.notify_all()

    @staticmethod
    def _publish(obj: str) -> None:
        """Content someone can read publicly may be read by all from the store too."""
        try:
            if os.stat(obj, follow_symlinks=False).st_mode & 0o777 != PUBLIC:
                os.chmod(obj, PUBLIC, follow_symlinks=False)
        except OSError:
            pass

    def _hit(self, key, st, verifier, roots_id, how, require_object=False) -> Staged | None:
        idx = self.indexed(key, st)
        if idx is None:
            return None
        digest = idx["digest"]
        f = self.findings(digest, roots_id, verifier) if roots_id else None
        if roots_id and f is None:
            return None                # not kept and never verified under these roots: stage again
        obj = self.store.object_path(digest)
        if not os.path.exists(obj):
            if require_object:
                return None
            obj = None
        return Staged(digest, obj, how, st.st_size, findings=f)

    def _stage_locked(self, src, st, key, verifier, roots_id, keep, who) -> Staged:
        free = shutil.disk_usage(self.store.tmp_dir).free
        if free < st.st_size + FREE_MARGIN:
            raise StoreError(f"the image store is full: {st.st_size / 2**20:.0f} MiB needed, "
                             f"{free / 2**20:.0f} MiB free: not staged")
        if self.slots is not None:
            with self.slots:
                c = copy_hashing(src, self.store.tmp_dir, self.durable)
        else:
            c = copy_hashing(src, self.store.tmp_dir, self.durable)
        try:
            obj = self.store.object_path(c.digest)
            how, copies = "staged", 1
            found = None
            if verifier is not None:
                found = verifier(c.fd, c.objects) | {"digest": c.digest, "roots": roots_id}
            if os.path.exists(obj):
                how, copies = "deduplicated", 0
                if records.read(self.store.manifest_path(c.digest)) is None:   # killed before writing it
                    self._manifest(c, who)
            elif keep(found) and self._within_quota(who, c.size):
                self._link(c, obj)
                self._manifest(c, who)
            else:
                copies = 0
            if found is not None:
                records.write(self.store.findings_path(c.digest, roots_id), found, durable=self.durable)
            stored = os.path.exists(obj)
            if not c.source_changed:
                records.write(self.store.index_path(key), {
                    "identity": keys.file_identity(st), "digest": c.digest, "stored": stored,
                    "indexed_at": time.time()}, durable=self.durable)
            return Staged(c.digest, obj if stored else None, how, c.size, c.bytes_hashed, copies, found)
        finally:
            os.close(c.fd)
            if c.named:
                records.remove(c.named)

    def _within_quota(self, who: dict, size: int) -> bool:
        """May this copy be kept for the uid that asked? Copies count against whoever first
        had them kept (manifest's staged_by); root is not bounded. Over the bound the image
        is still decided, just not kept (its tasks pin their own sealed copies)."""
        uid = who.get("uid")
        if self.per_user_bytes is None or not isinstance(uid, int) or uid == 0:
            return True
        used = 0
        objdir = os.path.join(self.store.root, "objects")
        for name in os.listdir(objdir):
            if name.endswith(".json") and not name.startswith("."):
                man = records.read(os.path.join(objdir, name))
                if man and (man.get("staged_by") or {}).get("uid") == uid and isinstance(man.get("size"), int):
                    used += man["size"]
        return used + size <= self.per_user_bytes

    def _manifest(self, c, who: dict) -> None:
        records.write(self.store.manifest_path(c.digest), {
            "digest": c.digest, "size": c.size, "objects": {str(k): v for k, v in c.objects.items()},
            "staged_at": time.time(), "staged_by": who}, durable=self.durable)

    def _link(self, c, obj: str) -> None:
        from sifguard.ca import files
        try:
            if c.named:
                os.link(c.named, obj)
            else:
                files.link_anonymous(c.fd, obj)
        except FileExistsError:
            pass
        except OSError as e:
            raise StoreError(f"cannot store the copy: {e.strerror}") from None
        if self.durable:
            files.fsync_dir(os.path.dirname(obj))
