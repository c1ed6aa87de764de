"""Acting as the job's user from a root hook: the hooks must not read, create or chown
files with root's rights on behalf of a user-supplied path."""

from __future__ import annotations

import os
import pwd


class as_user:
    """Context manager: effective uid/gid/groups of `uid` (no-op unless running as root)."""

    def __init__(self, uid: int, gid: int):
        self.uid, self.gid = uid, gid
        self.active = os.geteuid() == 0 and uid > 0

    def __enter__(self):
        if self.active:
            self.saved_groups = os.getgroups()
            try:
                groups = os.getgrouplist(pwd.getpwuid(self.uid).pw_name, self.gid)
            except KeyError:
                groups = [self.gid]
            os.setgroups(groups)
            os.setegid(self.gid)
            os.seteuid(self.uid)
        return self

    def __exit__(self, *exc):
        if self.active:
            os.seteuid(0)
            os.setegid(0)
            os.setgroups(self.saved_groups)
        return False


def open_image_as(uid: int, gid: int, path: str) -> int:
    """An O_RDONLY fd of `path` opened with the job user's rights (raises OSError)."""
    with as_user(uid, gid):
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def append_as(uid: int, gid: int, path: str, text: str) -> None:
    """Append to (or create) `path` as the job's user, as Slurm itself writes job output."""
    with as_user(uid, gid):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
