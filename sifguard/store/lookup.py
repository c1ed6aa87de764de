"""The hooks' warm path, as the job's user, without cryptography:

    open source (done by the gate) → fstat + first 4 KiB → index record → digest
      → decision record for (digest, policy fingerprint, candidate rules), still valid
      → open the stored copy, mark it in use (OFD read lock), check it is the one named

A miss anywhere returns None and the gate asks the stager (cold path).
"""

from __future__ import annotations

import os
import stat
import time

from sifguard.store import keys, locks, records
from sifguard.store.layout import Store, StoreError


class Entry:
    """A stored copy opened for running. (Plain classes here: the shim imports this per task.)"""

    __slots__ = ("digest", "path", "fd")

    def __init__(self, digest: str, path: str, fd: int):
        self.digest = digest
        self.path = path     # the store's immutable copy: what the runtime is given
        self.fd = fd         # read-only, holding the in-use lock (inheritable by the runtime)


class RecordedVerdict:
    """A verdict the stager recorded, as the audit writer and the gate need it."""

    __slots__ = ("record",)

    def __init__(self, record: dict):
        self.record = record

    @property
    def allowed(self) -> bool:
        return bool(self.record.get("allowed"))

    @property
    def decision(self) -> str:
        return str(self.record.get("decision", "refuse"))

    @property
    def reason(self) -> str:
        return str(self.record.get("reason", ""))

    @property
    def rule(self) -> str:
        return str(self.record.get("rule", ""))

    def as_dict(self) -> dict:
        return dict(self.record)


def source_key(fd: int, st: os.stat_result) -> str:
    return keys.index_key(st, keys.read_head(fd, st.st_size))


def index_record(store: Store, key: str, st: os.stat_result) -> dict | None:
    """The index record for the source with this key, if it is still for this file
    identity (with a digest); else None."""
    idx = records.read(store.index_path(key))
    if not idx or idx.get("identity") != keys.file_identity(st) or not isinstance(idx.get("digest"), str):
        return None
    return idx


def indexed_digest(store: Store, key: str, st: os.stat_result) -> str | None:
    """The digest of the source's stored copy, per the index."""
    idx = index_record(store, key, st)
    return idx["digest"] if idx and idx.get("stored") else None


def recorded_decision(store: Store, digest: str, policy_fp: str, candidates: tuple[str, ...],
                      now: float | None = None) -> dict | None:
    """The allowing verdict the stager recorded for exactly these inputs, if still valid."""
    try:
        rec = records.read(store.decision_path(keys.decision_key(digest, policy_fp, candidates)))
    except StoreError:
        return None
    now = time.time() if now is None else now
    if not rec or rec.get("digest") != digest or rec.get("policy") != policy_fp \
            or rec.get("candidates") != list(candidates):
        return None
    until = rec.get("valid_until")
    if not isinstance(until, (int, float)) or until <= now or not isinstance(rec.get("verdict"), dict):
        return None
    if not rec["verdict"].get("allowed"):
        return None
    return rec


def open_entry(store: Store, digest: str) -> Entry | None:
    """The stored copy of `digest`, open read-only and marked in use; None if it is not
    there, is being collected, or is not a root-owned read-only regular file."""
    try:
        fd = os.open(store.object_path(digest), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, StoreError):
        return None
    return held_entry(store, digest, fd)


def held_entry(store: Store, digest: str, fd: int) -> Entry | None:
    """The stored copy of `digest` open as `fd` (ours, or sent by the stager already marked
    in use), if it is that entry: a root-owned read-only regular file, marked in use, and
    — checked after the mark, so no collection can come between — still the one at the
    entry's name. Otherwise None (and `fd` is closed)."""
    try:
        path = store.object_path(digest)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o222:
            raise OSError("not a sealed store entry")
        if not locks.hold_shared(fd):
            raise OSError("being collected")
        here = os.stat(path, follow_symlinks=False)
        if (here.st_dev, here.st_ino) != (st.st_dev, st.st_ino):
            raise OSError("replaced")
    except (OSError, StoreError):
        os.close(fd)
        return None
    return Entry(digest, path, fd)


def warm(store: Store, fd: int, st: os.stat_result, policy_fp: str, candidates: tuple[str, ...]):
    """(Entry, recorded decision) when the image open as `fd` was staged and an allowing
    decision for these inputs is still valid; else None."""
    digest = indexed_digest(store, source_key(fd, st), st)
    if digest is None:
        return None
    rec = recorded_decision(store, digest, policy_fp, candidates)
    if rec is None:
        return None
    entry = open_entry(store, digest)
    if entry is None:
        return None
    return entry, rec
