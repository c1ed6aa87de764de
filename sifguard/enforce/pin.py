"""Pinning the bytes that were verified: a sealed in-memory copy.

The copy is a memfd sealed against every change (F_SEAL_WRITE|SHRINK|GROW|SEAL: not
even its owner can alter it), so what is verified is what the runtime reads. Nothing
is ever copied anywhere else: an image that cannot be sealed (over the size limit, or
no memfd support) is refused — an unsealed copy in a user-writable place could be
rewritten between check and exec.
"""

from __future__ import annotations

import fcntl
import os

from sifguard.errors import RefusedError

DEFAULT_LIMIT = 1 << 30
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


class CannotPin(RefusedError):
    """The image cannot be held immutably for the runtime, so it is not run."""


def _size(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def sealed_copy(src: int, limit: int = DEFAULT_LIMIT) -> int:
    """A read-only, inheritable fd on an immutable copy of the regular file open as `src`
    (its first st_size bytes at the time of the call)."""
    size = os.fstat(src).st_size
    if size > limit:
        raise CannotPin(f"image is {_size(size)}, over the {_size(limit)} limit for a sealed in-memory copy")
    if not hasattr(os, "memfd_create"):
        raise CannotPin("this system cannot seal a copy of the image (no memfd)")
    fd = os.memfd_create("sifguard-verified.sif", os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC)
    try:
        off = 0
        while off < size:
            n = os.sendfile(fd, src, off, size - off)
            if n <= 0:
                raise CannotPin("the image shrank while it was being copied")
            off += n
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        ro = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
    except OSError as e:
        raise CannotPin(f"cannot make a sealed copy of the image: {e.strerror or e}") from None
    finally:
        os.close(fd)
    os.set_inheritable(ro, True)
    return ro
