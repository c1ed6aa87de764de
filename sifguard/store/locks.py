"""Locks on store entries.

In use: whoever runs an entry holds an open-file-description (OFD) *read* lock on it,
taken on a read-only descriptor and inherited by the runtime across exec; it lasts until
the last process holding that descriptor exits. `store gc` removes an entry only after
taking the *write* lock, which needs a descriptor open for writing: users can open the
0444 copies read-only only, so a user can delay the collection of an entry they can run,
never block other users from it.

Staging: one flock per source key in DIR/locks (root only), so concurrent requests for
the same image wait on one staging — across stager processes and nodes sharing a store.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

_FLOCK = "hhqqi4x"     # struct flock (x86-64/aarch64 Linux): type, whence, start, len, pid (0 for OFD)


def _ofd(fd: int, kind: int, wait: bool) -> bool:
    cmd = fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK
    try:
        fcntl.fcntl(fd, cmd, struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 0, 0))
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


def hold_shared(fd: int) -> bool:
    """Mark the entry open as `fd` (read-only is enough) in use, until every copy of this
    descriptor is closed (it survives exec when the fd is inheritable). False if the
    collector holds it right now (it is being removed)."""
    return _ofd(fd, fcntl.F_RDLCK, wait=False)


def try_exclusive(fd: int) -> bool:
    """The collector's claim (`fd` open for writing): False while anyone holds the entry."""
    return _ofd(fd, fcntl.F_WRLCK, wait=False)


def in_use(path: str) -> bool:
    """Does anyone hold a lock on the entry at `path`? Asked with F_OFD_GETLK, which takes
    nothing: taking the write lock to find out (even for an instant) made a task starting
    at that instant fail to mark the entry in use, so `store list` could get it refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        got = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
        return struct.unpack(_FLOCK, got)[0] != fcntl.F_UNLCK
    finally:
        os.close(fd)


class staging_lock:
    """Exclusive flock on DIR/locks/<key>.lock for the duration of one staging."""

    def __init__(self, path: str):
        self.path = path
        self.fd = -1

    def __enter__(self) -> "staging_lock":
        while True:    # the holder unlinks the file when done: lock the one at the path now
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                here = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                here = None
            mine = os.fstat(fd)
            if here is not None and (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino):
                self.fd = fd
                return self
            os.close(fd)

    def __exit__(self, *exc) -> None:
        try:
            os.unlink(self.path)   # the next staging of this key makes a fresh file
        except OSError:
            pass
        os.close(self.fd)
