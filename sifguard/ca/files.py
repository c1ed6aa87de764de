"""Crash-safe file publication for the CA: a file appears under its final name complete or
not at all, secrets are 0600 from the first byte, and `kill -9` at any instant leaves
nothing that the next run does not recognise and sweep.

- `create`: a new file that must not exist yet (a generated private key, a certificate
  written for the first time). Written to an anonymous O_TMPFILE inode and linked into place
  (no name exists until the content is complete and fsynced; linking never replaces an
  existing file). Where O_TMPFILE is unsupported, a named temporary (see below) is
  hard-linked into place and unlinked.
- `replace`: atomically replace a file (CRLs, published certificates): named temporary,
  fsync, rename, fsync of the directory.
- Named temporaries are `.<name>.sgtmp.<pid>.<random>` in the target's directory; `sweep`
  removes those whose process is gone (and the `<name>.tmp-<pid>` names of earlier versions).
- `locked`: an exclusive flock on a lock file, for publication that must be ordered.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets

from sifguard.errors import BadInputError

TMP_MARK = ".sgtmp."
_TMP_RE = re.compile(r"^\..+\.sgtmp\.(\d+)\.[0-9a-f]+(?:-wal|-shm|-journal)?$|^.+\.tmp-(\d+)$")


def fsync_dir(d: str) -> None:
    try:
        fd = os.open(d or ".", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes, durable: bool = True) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
    if durable:
        os.fsync(fd)


def open_anonymous(d: str, mode: int, flags: int = os.O_WRONLY) -> int | None:
    """An O_TMPFILE in directory `d` (no name until `link_anonymous`); None where the file
    system does not support it."""
    if not hasattr(os, "O_TMPFILE"):
        return None
    try:
        return os.open(d, os.O_TMPFILE | flags | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise


def link_anonymous(fd: int, path: str) -> None:
    """Give the O_TMPFILE open as `fd` the name `path` (never replacing a file there:
    FileExistsError). linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N — os.link without a
    directory descriptor calls plain link(), which would try to link the /proc entry itself."""
    dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(f"/proc/self/fd/{fd}", path, src_dir_fd=dfd, follow_symlinks=True)
    finally:
        os.close(dfd)


def _named_tmp(path: str, mode: int) -> tuple[str, int]:
    d, base = os.path.split(path)
    tmp = os.path.join(d, f".{base}{TMP_MARK}{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    return tmp, fd


def _written_tmp(path: str, data: bytes, create_mode: int, mode: int, durable: bool = True) -> str:
    """A named temporary beside `path` holding `data` with exactly `mode` (removed again if
    writing fails)."""
    tmp, fd = _named_tmp(path, create_mode)
    try:
        os.fchmod(fd, mode)
        _write_all(fd, data, durable)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def _create_anonymous(path: str, d: str, data: bytes, mode: int) -> bool:
    """O_TMPFILE + link: False when the file system or /proc does not allow it."""
    fd = open_anonymous(d, mode)
    if fd is None:
        return False
    try:
        os.fchmod(fd, mode)              # exact mode whatever the umask
        _write_all(fd, data)
        try:
            link_anonymous(fd, path)
        except FileExistsError:
            raise BadInputError(f"{path} exists; refusing to overwrite it") from None
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP) and \
                    not os.path.lexists(path) and os.path.isdir(d):
                return False             # no /proc: use a named temporary
            raise
    finally:
        os.close(fd)
    return True


def create(path: str, data: bytes, mode: int = 0o600) -> None:
    """Publish a new file atomically; BadInputError if `path` already exists."""
    d = os.path.dirname(path) or "."
    if not _create_anonymous(path, d, data, mode):
        tmp = _written_tmp(path, data, mode, mode)
        try:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise BadInputError(f"{path} exists; refusing to overwrite it") from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    fsync_dir(d)


def replace(path: str, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    """Atomically put `data` at `path` (replacing what is there) with exactly `mode`.
    `durable=False`: no fsyncs (a cache record whose loss costs only time)."""
    tmp = _written_tmp(path, data, 0o600, mode, durable)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(os.path.dirname(path))


def process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(directory: str, stem: str | None = None) -> list[str]:
    """Remove temporaries left in `directory` by processes that no longer run (only those
    for the file named `stem` when given). Returns what was removed."""
    removed = []
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return removed
    for name in names:
        m = _TMP_RE.match(name)
        if not m:
            continue
        if stem is not None and not (name.startswith(f".{stem}{TMP_MARK}") or name.startswith(f"{stem}.tmp-")):
            continue
        pid = int(m.group(1) or m.group(2))
        if process_alive(pid):
            continue
        p = os.path.join(directory, name)
        with contextlib.suppress(OSError):
            if not os.path.islink(p) and os.path.isfile(p):
                os.unlink(p)
                removed.append(p)
    return removed


@contextlib.contextmanager
def locked(path: str, optional: bool = False):
    """Hold an exclusive flock on `path` (created 0600) for the duration of the block.
    `optional`: where the lock file cannot be created (read-only directory), go on unlocked."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        if optional and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            yield
            return
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
