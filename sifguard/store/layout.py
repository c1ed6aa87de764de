"""Where things live in a store directory, and whether the directory can be trusted."""

from __future__ import annotations

import os
import re
import stat

from sifguard.errors import SifguardError

DEFAULT_DIR = "/var/lib/sifguard/store"

# (name, mode): what users may traverse (0711, never list) and what only root reads (0700)
SUBDIRS = (("objects", 0o711), ("index", 0o711), ("decisions", 0o711), ("findings", 0o711),
           ("tmp", 0o700), ("locks", 0o700))

_HEX = re.compile(r"[0-9a-f]{64}")


class StoreError(SifguardError):
    """The store cannot be used (unsafe, missing, full, …): hooks fall back or refuse."""

    exit_code = 1


class UnsafeStore(StoreError):
    """The store directory could be written by someone other than root."""


def _check_dir(path: str, what: str) -> None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        raise StoreError(f"image store {what} {path} does not exist (create it with `sifguard store "
                         "serve` or `sifguard store stage` as root)") from None
    except OSError as e:
        raise StoreError(f"image store {what} {path}: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        fix = (f"configure the directory it points to, {os.path.realpath(path)}" if stat.S_ISLNK(st.st_mode)
               else "replace it with a root-owned directory, mode 0755")
        raise UnsafeStore(f"image store {what} {path} is not a directory (a symlink or other file); "
                          f"the hooks will not use it (fix: {fix})")
    if st.st_uid != 0:
        raise UnsafeStore(f"image store {what} {path} is owned by uid {st.st_uid}, not root; the hooks will not "
                          f"use it (fix: chown root:root {path})")
    if st.st_mode & 0o022:
        raise UnsafeStore(f"image store {what} {path} is writable by group or others (mode "
                          f"{stat.S_IMODE(st.st_mode):o}); the hooks will not use it (fix: chmod go-w {path})")


class Store:
    """A store directory. (A plain class, not a dataclass: the shim imports this per task.)"""

    __slots__ = ("root",)

    def __init__(self, root: str):
        self.root = root

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    # --- safety --------------------------------------------------------------------
    def check_safe(self) -> None:
        """Raise UnsafeStore/StoreError unless the store and every directory above it are
        root-owned and writable by nobody else (so no one but root can swap an entry)."""
        path = os.path.abspath(self.root)
        _check_dir(path, "directory")
        _check_ancestors(path)
        for name, _ in SUBDIRS:
            sub = os.path.join(path, name)
            if os.path.lexists(sub):
                _check_dir(sub, "subdirectory")

    def init(self) -> None:
        """Create the layout (root only); the store directory itself may pre-exist. Nothing
        is created or changed until the directories above the store are known to be root's
        alone, and modes are set through descriptors opened without following symlinks: a
        store put (by mistake) under a directory users can write is refused, never used to
        make root chmod what a user planted there."""
        old = os.umask(0o022)       # what users must traverse is 0755/0711 whatever the stager's umask
        try:
            self._init()
        finally:
            os.umask(old)

    def _init(self) -> None:
        path = os.path.abspath(self.root)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        _check_ancestors(path)
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            pass
        _check_dir(path, "directory")
        for name, mode in SUBDIRS:
            p = os.path.join(path, name)
            try:
                os.mkdir(p, mode)
            except FileExistsError:
                pass
            try:
                fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as e:
                raise UnsafeStore(f"image store subdirectory {p} is not a directory ({e.strerror}); "
                                  "the store will not use it") from None
            try:
                if os.fstat(fd).st_uid != 0:
                    raise UnsafeStore(f"image store subdirectory {p} is not owned by root; the store will not use it")
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
        self.check_safe()

    # --- names ---------------------------------------------------------------------
    def object_path(self, digest: str) -> str:
        return os.path.join(self.root, "objects", f"{_hex(digest)}.sif")

    def manifest_path(self, digest: str) -> str:
        return os.path.join(self.root, "objects", f"{_hex(digest)}.json")

    def findings_path(self, digest: str, roots_id: str) -> str:
        return os.path.join(self.root, "findings", f"{_hex(digest)}-{_hex(roots_id)}.json")

    def index_path(self, key: str) -> str:
        return os.path.join(self.root, "index", f"{_hex(key)}.json")

    def decision_path(self, key: str) -> str:
        return os.path.join(self.root, "decisions", f"{_hex(key)}.json")

    def lock_path(self, key: str) -> str:
        return os.path.join(self.root, "locks", f"{_hex(key)}.lock")

    @property
    def tmp_dir(self) -> str:
        return os.path.join(self.root, "tmp")


def _check_ancestors(path: str) -> None:
    """Every directory above `path`, up to /, is root's alone (see _check_ancestor)."""
    parent = os.path.dirname(path)
    while True:
        _check_ancestor(parent)
        if parent == "/":
            return
        parent = os.path.dirname(parent)


def _check_ancestor(path: str) -> None:
    try:
        st = os.stat(path)
    except OSError as e:
        raise StoreError(f"image store parent {path}: {e.strerror}") from None
    if st.st_uid != 0 or (st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX):
        fix = [f"chown root:root {path}"] if st.st_uid != 0 else []
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            fix.append(f"chmod go-w {path}, or chmod +t it if all must write there (as /tmp)")
        raise UnsafeStore(f"image store parent directory {path} can be changed by uid {st.st_uid} or by group/others "
                          f"(mode {stat.S_IMODE(st.st_mode):o}); the hooks will not use a store under it "
                          f"(fix: {'; '.join(fix)}, or put the store elsewhere)")


def _hex(s: str) -> str:
    if not _HEX.fullmatch(s or ""):
        raise StoreError(f"not a store key: {s!r}")
    return s
