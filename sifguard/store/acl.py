"""Read access to a private stored copy, one user at a time (POSIX access ACLs).

A copy of an image whose source not every user can read is root's (0400). Each user who
proves they can read the source — by sending the stager a descriptor of it — gets a
named-user read entry on the copy, so their runtime can open it by its path (and through
/proc/self/fd, which re-checks permissions); anyone else who sees that path cannot.

The kernel's `system.posix_acl_access` value is small and fixed (linux/posix_acl_xattr.h):
a little-endian u32 version (2), then (u16 tag, u16 perm, u32 id) entries sorted by tag
and id. Python has no binding for it (pylibacl would be a C dependency for 40 lines).
"""

from __future__ import annotations

import errno
import os
import struct

XATTR = "system.posix_acl_access"
VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
UNDEFINED_ID = 0xFFFFFFFF
READ = 4
MAX_USERS = 400          # an ext4 xattr lives in one 4 KiB block: 8 bytes an entry


class AclError(OSError):
    pass


def _decode(raw: bytes) -> list[tuple[int, int, int]]:
    if len(raw) < 4 or (len(raw) - 4) % 8 or struct.unpack_from("<I", raw)[0] != VERSION:
        raise AclError(errno.EINVAL, "unexpected ACL format")
    return [struct.unpack_from("<HHI", raw, 4 + 8 * i) for i in range((len(raw) - 4) // 8)]


def _encode(entries: list[tuple[int, int, int]]) -> bytes:
    return struct.pack("<I", VERSION) + b"".join(struct.pack("<HHI", *e) for e in sorted(entries))


def readers(path: str) -> set[int]:
    """The uids with a named read entry on `path`."""
    try:
        raw = os.getxattr(path, XATTR, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP):
            return set()
        raise
    return {i for tag, perm, i in _decode(raw) if tag == USER and perm & READ}


def grant_read(path: str, uid: int) -> None:
    """Let `uid` read `path` (a root-owned file), keeping everyone else out; raises
    OSError (e.g. ENOTSUP: no ACLs on this filesystem; AclError past MAX_USERS)."""
    users = readers(path)
    if uid in users:
        return
    if len(users) >= MAX_USERS:
        raise AclError(errno.E2BIG, f"{MAX_USERS} users already read this private copy")
    st = os.stat(path, follow_symlinks=False)
    owner = (st.st_mode >> 6) & 7
    entries = [(USER_OBJ, owner, UNDEFINED_ID), (GROUP_OBJ, 0, UNDEFINED_ID), (MASK, READ, UNDEFINED_ID),
               (OTHER, 0, UNDEFINED_ID)] + [(USER, READ, u) for u in sorted(users | {uid})]
    os.setxattr(path, XATTR, _encode(entries), follow_symlinks=False)
