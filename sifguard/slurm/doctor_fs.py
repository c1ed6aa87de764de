"""What the doctor asks of files: root's alone along the whole path (the pattern of
store/layout's ancestor check: root-owned, not group/other-writable unless sticky), no
symlink where install wrote a file, and what an unprivileged user can read or run."""

from __future__ import annotations

import json
import os
import signal
import stat
import time

NOBODY = 65534


def _mode(st) -> str:
    return f"{stat.S_IMODE(st.st_mode):o}"


def ancestor_problems(path: str) -> list[tuple[str, str]]:
    """(problem, fix) for each directory above `path` that someone but root could change."""
    out = []
    parent = os.path.dirname(os.path.abspath(path))
    while True:
        try:
            st = os.stat(parent)
        except OSError as e:
            out.append((f"{parent}: {e.strerror}", f"create {parent} as root, mode 0755"))
            return out
        if st.st_uid != 0:
            out.append((f"directory {parent} is owned by uid {st.st_uid}", f"chown root:root {parent}"))
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            out.append((f"directory {parent} is writable by group/others (mode {_mode(st)})",
                        f"chmod go-w {parent}"))
        if parent == "/":
            return out
        parent = os.path.dirname(parent)


def file_problems(path: str, follow: bool = False, want_exec: bool = False) -> list[tuple[str, str]]:
    """(problem, fix) pairs for a file root relies on: it and every directory above it (and,
    with `follow`, above each symlink target on the way) root's alone. Without `follow` a
    symlink is itself a problem (install writes regular files: a link is someone's swap)."""
    out: list[tuple[str, str]] = []
    try:
        lst = os.lstat(path)
    except OSError as e:
        return [(f"{path}: {e.strerror}", "run `sifguard slurm install` again")]
    seen = [path]
    if stat.S_ISLNK(lst.st_mode):
        if not follow:
            return [(f"{path} is a symlink (to {os.readlink(path)}); install writes a regular file",
                     f"rm {path} and run `sifguard slurm install` again")] + ancestor_problems(path)
    out += ancestor_problems(path)
    real = os.path.realpath(path)
    if real != os.path.abspath(path):
        seen.append(real)
        for p in ancestor_problems(real):
            if p not in out:
                out.append(p)
    try:
        st = os.stat(path)
    except OSError as e:
        return out + [(f"{path}: {e.strerror} (dangling link?)", f"repair {path}")]
    if not stat.S_ISREG(st.st_mode):
        out.append((f"{real} is not a regular file", f"replace {path} with a regular file"))
    if st.st_uid != 0:
        out.append((f"{real} is owned by uid {st.st_uid}", f"chown root:root {real}"))
    if st.st_mode & 0o022:
        out.append((f"{real} is writable by group/others (mode {_mode(st)})", f"chmod go-w {real}"))
    if want_exec and not st.st_mode & 0o001:
        out.append((f"{real} is not executable by others (mode {_mode(st)})", f"chmod a+rx {real}"))
    return out


def tree_problems(top: str, limit: int = 5000) -> list[tuple[str, str]]:
    """`top`, the directories above it, and everything below it (up to `limit` entries)
    root's alone: what root-run hooks import from there cannot be changed by anyone else."""
    out = list(ancestor_problems(os.path.join(top, "x")))
    n = 0
    for d, dirs, files in os.walk(top):
        for name in [*dirs, *files]:
            n += 1
            if n > limit:
                return out
            p = os.path.join(d, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if st.st_uid != 0:
                out.append((f"{p} is owned by uid {st.st_uid}", f"chown -R root:root {top}"))
            elif st.st_mode & 0o022 and not stat.S_ISLNK(st.st_mode):
                out.append((f"{p} is writable by group/others (mode {_mode(st)})", f"chmod -R go-w {top}"))
            if len(out) > 5:
                return out
    return out


def shebang(path: str) -> list[str]:
    """The interpreter line of a script, split (empty when there is none)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return []
    if not head.startswith(b"#!"):
        return []
    return head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()


def hook_sys_path(path: str) -> list[str]:
    """The sys.path entries install wrote on a hook's second line (`sys.path[:0] = [...]`)."""
    import ast
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            f.readline()
            second = f.readline()
    except OSError:
        return []
    marker = "sys.path[:0] = "
    if marker not in second:
        return []
    try:
        v = ast.literal_eval(second.split(marker, 1)[1].strip())
    except (ValueError, SyntaxError):
        return []
    return [p for p in v if isinstance(p, str)] if isinstance(v, list) else []


def as_user(probes: list[tuple[str, str]], timeout: float, uid: int = NOBODY, gid: int = NOBODY) -> dict:
    """Run probes as `uid` in a forked child (root only): ("read", path) opens the file,
    ("exec", path) asks access(X_OK). {path+kind: "" when allowed, else the error}. A child
    that does not answer within `timeout` is killed; its probes read "timed out"."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:        # child: drop everything, probe, write one JSON line, _exit
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            res = {}
            for kind, p in probes:
                try:
                    if kind == "exec":
                        if not os.access(p, os.X_OK):
                            raise PermissionError(13, "Permission denied")
                    else:
                        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                        os.read(fd, 1)
                        os.close(fd)
                    res[kind + ":" + p] = ""
                except OSError as e:
                    res[kind + ":" + p] = e.strerror or str(e)
            os.write(w, json.dumps(res).encode())
        finally:
            os._exit(0)
    os.close(w)
    deadline = time.monotonic() + timeout
    data = b""
    try:
        os.set_blocking(r, False)
        while time.monotonic() < deadline:
            try:
                chunk = os.read(r, 65536)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    try:
        return json.loads(data.decode()) if data else {k + ":" + p: "timed out" for k, p in probes}
    except ValueError:
        return {k + ":" + p: "no answer" for k, p in probes}


def self_access(probes: list[tuple[str, str]]) -> dict:
    """The same probes as the calling user (when the doctor does not run as root)."""
    res = {}
    for kind, p in probes:
        if kind == "exec":
            res[kind + ":" + p] = "" if os.access(p, os.X_OK) else "Permission denied"
            continue
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.close(fd)
            res[kind + ":" + p] = ""
        except OSError as e:
            res[kind + ":" + p] = e.strerror or str(e)
    return res
