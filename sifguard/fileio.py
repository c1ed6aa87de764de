"""Files and directories someone else may have planted. Reading: regular files only, opened
non-blocking (a FIFO or a device never stalls the reader), never more than a cap. Writing
as root: only into a directory root alone can write. Kept free of heavy imports: the
per-task shim uses it."""

from __future__ import annotations

import os
import stat

_CHUNK = 1 << 20


class FileReadError(OSError):
    """Not a regular file, over the cap, or unreadable; the message names the path."""


def read_regular(path: str, cap: int) -> bytes:
    """The whole of a regular file of at most `cap` bytes (never reads more than cap + 1)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise FileReadError(f"{path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileReadError(f"{path}: not a regular file")
        if st.st_size > cap:
            raise FileReadError(f"{path}: {st.st_size} bytes, more than the {cap}-byte limit")
        buf = bytearray()
        while len(buf) <= cap:
            chunk = os.read(fd, min(_CHUNK, cap + 1 - len(buf)))
            if not chunk:
                break
            buf += chunk
        if len(buf) > cap:
            raise FileReadError(f"{path}: grew past the {cap}-byte limit while read")
        return bytes(buf)
    except FileReadError:
        raise
    except OSError as e:
        raise FileReadError(f"{path}: {e.strerror}") from None
    finally:
        os.close(fd)


def root_only_dir(d: str) -> None:
    """For a root hook about to write in `d`: create it (0755) when missing; OSError(EPERM)
    unless root owns it and no one else can write it (a user could swap the file)."""
    import errno
    if not os.path.isdir(d):
        os.makedirs(d, mode=0o755, exist_ok=True)
    st = os.stat(d)
    if st.st_uid != 0 or st.st_mode & 0o022:
        raise OSError(errno.EPERM, f"directory {d} is not root's alone")
