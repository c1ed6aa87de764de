"""Listing the store and collecting it under a size budget (root).

Least recently used first: last use is the copy's access time (updated by the runtime
reading it; under `relatime` at most daily) or when it was staged, whichever is later.
An entry someone holds (an OFD read lock, kept by a running task's runtime) is never
removed: the collector takes the write lock first, and removes the entry while holding it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from sifguard.store import locks, records
from sifguard.store.layout import Store

STALE_TMP = 3600.0


@dataclass
class Entry:
    digest: str
    size: int
    staged_at: float
    last_used: float
    in_use: bool
    sources: int = 0

    def as_dict(self) -> dict:
        return {"digest": self.digest, "size": self.size, "staged_at": self.staged_at,
                "last_used": self.last_used, "in_use": self.in_use, "sources": self.sources}


@dataclass
class Collected:
    removed: list[str] = field(default_factory=list)
    freed: int = 0
    kept_in_use: list[str] = field(default_factory=list)
    total_before: int = 0
    total_after: int = 0
    records_removed: int = 0

    def as_dict(self) -> dict:
        return {"removed": self.removed, "freed": self.freed, "kept_in_use": self.kept_in_use,
                "total_before": self.total_before, "total_after": self.total_after,
                "records_removed": self.records_removed}


def _names(d: str, suffix: str) -> list[str]:
    try:
        return sorted(n[: -len(suffix)] for n in os.listdir(d) if n.endswith(suffix) and not n.startswith("."))
    except FileNotFoundError:
        return []


def entries(store: Store) -> list[Entry]:
    objdir = os.path.join(store.root, "objects")
    index = _index_by_digest(store)
    out = []
    for digest in _names(objdir, ".sif"):
        try:
            st = os.stat(store.object_path(digest), follow_symlinks=False)
        except (OSError, Exception):
            continue
        man = records.read(store.manifest_path(digest)) or {}
        staged = float(man.get("staged_at") or st.st_mtime)
        out.append(Entry(digest, st.st_size, staged, max(st.st_atime, staged),
                         locks.in_use(store.object_path(digest)), len(index.get(digest, ()))))
    return sorted(out, key=lambda e: e.last_used, reverse=True)


def _index_by_digest(store: Store) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    d = os.path.join(store.root, "index")
    for key in _names(d, ".json"):
        rec = records.read(os.path.join(d, key + ".json"))
        if rec and isinstance(rec.get("digest"), str):
            out.setdefault(rec["digest"], []).append(key)
    return out


def collect(store: Store, budget: int, now: float | None = None) -> Collected:
    now = time.time() if now is None else now
    res = Collected()
    all_entries = entries(store)
    res.total_before = sum(e.size for e in all_entries)
    total = res.total_before
    gone: set[str] = set()
    for e in sorted(all_entries, key=lambda e: e.last_used):
        if total <= budget:
            break
        if _remove_object(store, e.digest):
            gone.add(e.digest)
            res.removed.append(e.digest)
            res.freed += e.size
            total -= e.size
        else:
            res.kept_in_use.append(e.digest)
    res.total_after = total
    res.records_removed = _sweep_records(store, gone, now)
    return res


def _remove_object(store: Store, digest: str) -> bool:
    """Remove the copy of `digest` unless someone holds it; True if removed."""
    path = store.object_path(digest)
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        if not locks.try_exclusive(fd):
            return False
        records.remove(path)                        # while holding the lock: no one can start using it
        records.remove(store.manifest_path(digest))
        return True
    finally:
        os.close(fd)


def _sweep_records(store: Store, gone: set[str], now: float) -> int:
    """Records that name no stored copy (removed now, or never kept: a refused image's
    index and findings, which any user can make one of per file), expired decisions,
    stale staging files."""
    n = 0
    kept = set(_names(os.path.join(store.root, "objects"), ".sif")) - gone
    for sub, suffix in (("index", ".json"), ("decisions", ".json"), ("findings", ".json")):
        d = os.path.join(store.root, sub)
        for name in _names(d, suffix):
            p = os.path.join(d, name + suffix)
            if sub == "findings":
                if name.split("-")[0] not in kept:
                    records.remove(p)
                    n += 1
                continue
            rec = records.read(p)
            dead = rec is None or rec.get("digest") not in kept or (
                sub == "decisions" and float(rec.get("valid_until") or 0) < now)
            if dead:
                records.remove(p)
                n += 1
    tmp = store.tmp_dir
    try:
        for name in os.listdir(tmp):
            p = os.path.join(tmp, name)
            try:
                if now - os.stat(p, follow_symlinks=False).st_mtime > STALE_TMP:
                    os.unlink(p)
                    n += 1
            except OSError:
                pass
    except FileNotFoundError:
        pass
    return n
