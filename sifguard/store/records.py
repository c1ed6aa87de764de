"""Small JSON records in the store: written by root atomically, trusted only when root
wrote them (owner root, nobody else can write), read without ever blocking."""

from __future__ import annotations

import json
import os
import stat

MAX_RECORD = 4 << 20


def write(path: str, doc: dict, mode: int = 0o444, durable: bool = True) -> None:
    """Atomically replace `path` with `doc` (the project's crash-safe publication: a
    reader sees the old record or the new one, never part)."""
    from sifguard.ca import files
    files.replace(path, json.dumps(doc, separators=(",", ":"), sort_keys=True).encode(), mode, durable)


def read(path: str) -> dict | None:
    """The record at `path` if root wrote it and no one else can change it; else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022 or st.st_size > MAX_RECORD:
            return None
        data = os.pread(fd, st.st_size, 0)
        doc = json.loads(data)
        return doc if isinstance(doc, dict) else None
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def remove(path: str) -> None:
    _unlink(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
