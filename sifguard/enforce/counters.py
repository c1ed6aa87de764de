"""Node decision counters for node_exporter's textfile collector (policy `metrics.textfile`).

    sifguard_decisions_total{hook="…",decision="allow|refuse|audit|deferred",reason_class="…"} N

Updated by the one audit writer (sifguard/enforce/audit.py) for every decision and event
it records. Labels are bounded: the hook name (a short identifier the code sets, anything
else becomes `other`), one of four decisions and one of REASON_CLASSES — the audit
report's class of the same record, folded — never an image path, user or job.

The file is rewritten whole under an exclusive flock on a sibling lock file
(`<file>.lock`, 0600: a job's user cannot open it, so cannot hold the lock and stall the
hooks; a writer waits at most LOCK_WAIT for it, then skips its increment): read the counts,
add one, write `<file>.<pid>.tmp` (0644), rename over the file — so concurrent tasks on a
node never lose an increment and the collector never reads a partial file (a rename is
atomic; `*.tmp` names are not collected). Root creates
the lock file, and writes only into a directory root owns that no one else can write;
anyone else (the shim runs as the job's user) cannot write the root-owned file and is
skipped silently (the audit record itself goes to syslog then). No failure here ever
raises: a counter never changes a decision.

The text format is written here, not with prometheus_client: these hooks run for every
job step and import as little as they can; a few counter lines are simple to write (label
values are restricted to [A-Za-z0-9_.-], so nothing needs escaping), and the tests read
the file with prometheus_client's own parser.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time

NAME = "sifguard_decisions_total"
HEADER = (f"# HELP {NAME} Image decisions on this node by hook, decision and reason class.\n"
          f"# TYPE {NAME} counter\n")
DECISIONS = ("allow", "refuse", "audit", "deferred")
REASON_CLASSES = ("ok", "unsigned", "tampered", "untrusted", "expired", "revoked", "revocation_unavailable",
                  "policy", "unreadable", "other")
_HOOK = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")
_LINE = re.compile(NAME + r'\{hook="([A-Za-z0-9_.-]+)",decision="([a-z]+)",reason_class="([a-z_]+)"\} (\d+)\n')
LOCK_WAIT = 1.0            # seconds a decision waits for the lock at most; then the increment is skipped
MAX_SERIES = 1000          # a file grown past this (by hand?) is not trusted: counting restarts


# --- which class a decision falls in (pure) ----------------------------------------------
# The audit report's classes (sifguard/audit/classify.py: checks first, then the fixed
# wordings with user-chosen text removed), folded onto this metric's label values.
_FOLD = {"unsigned": "unsigned", "untrusted-signer": "untrusted", "tampered": "tampered", "revoked": "revoked",
         "expired": "expired", "revocation-unavailable": "revocation_unavailable", "signer-not-allowed": "policy",
         "unreadable": "unreadable", "runtime-refused": "policy", "other": "other"}


def record_class(record: dict) -> str:
    """One of REASON_CLASSES for an audit record (a verdict's as_dict(), or an event)."""
    if record.get("decision") == "allow":
        return "ok"
    from sifguard.audit.classify import classify
    return _FOLD.get(classify(record), "other")


def reason_class(verdict) -> str:
    """One of REASON_CLASSES for a Verdict."""
    return record_class(verdict.as_dict())


def labels(hook, decision, cls) -> tuple[str, str, str]:
    """Bounded label values: unknown hooks, decisions and classes become `other`."""
    hook = hook if isinstance(hook, str) and _HOOK.match(hook) else "other"
    decision = decision if decision in DECISIONS else "other"
    cls = cls if cls in REASON_CLASSES else "other"
    return hook, decision, cls


# --- the file -------------------------------------------------------------------------
def parse(text: str) -> dict[tuple[str, str, str], int]:
    counts: dict[tuple[str, str, str], int] = {}
    for line in text.splitlines(keepends=True):
        m = _LINE.fullmatch(line)
        if m:
            counts[(m[1], m[2], m[3])] = int(m[4])
    return counts if len(counts) <= MAX_SERIES else {}


def render(counts: dict[tuple[str, str, str], int]) -> str:
    return HEADER + "".join(f'{NAME}{{hook="{h}",decision="{d}",reason_class="{c}"}} {n}\n'
                            for (h, d, c), n in sorted(counts.items()))


def count(path: str | None, hook, decision, cls) -> bool:
    """Add one to the series; True when written. Never raises."""
    if not path:
        return False
    try:
        _increment(path, labels(hook, decision, cls))
        return True
    except (OSError, ValueError):
        return False


def _lock(fd: int) -> None:
    """flock(LOCK_EX) within LOCK_WAIT: a writer stopped while holding the lock (SIGSTOP, a
    hung filesystem) costs the others one skipped increment, never a hung hook."""
    import fcntl
    deadline = time.monotonic() + LOCK_WAIT
    pause = 0.0005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise OSError(errno.EWOULDBLOCK, "metrics lock held too long") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.02)


def _increment(path: str, key: tuple[str, str, str]) -> None:
    d = os.path.dirname(path) or "."
    root = os.geteuid() == 0
    if root:
        from sifguard.fileio import root_only_dir
        root_only_dir(d)
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | (os.O_CREAT if root else 0)
    lock = os.open(path + ".lock", flags, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(lock).st_mode):
            raise OSError(errno.EINVAL, "lock is not a regular file")
        if root:
            os.fchmod(lock, 0o600)      # no one else may open it, so no one else can hold the lock
        _lock(lock)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            counts = {}
        else:
            try:
                counts = parse(os.read(fd, 1 << 20).decode("utf-8", "replace"))
            finally:
                os.close(fd)
        counts[key] = counts.get(key, 0) + 1
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            os.unlink(tmp)             # left by a process of this pid that died mid-write (we hold the lock)
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            try:
                os.fchmod(fd, 0o644)
                data = render(counts).encode()
                try:
                    # blocks allocated up front: ext4 then need not flush the new file's
                    # data when the rename replaces the old one (auto_da_alloc) — measured
                    # 1.3-4x cheaper here (tests/bench/metrics_overhead.py)
                    os.posix_fallocate(fd, 0, len(data))
                except OSError:
                    pass
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    finally:
        os.close(lock)
