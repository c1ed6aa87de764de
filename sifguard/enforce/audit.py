"""The JSON-lines decision log — the one writer every hook and the CLI go through.

One line per decision or deferral, stamped here (time, host, pid, uid), appended with
a single O_APPEND write so lines from concurrent deciders never interleave."""

from __future__ import annotations

import errno
import json
import os
import stat
import time

from sifguard.errors import SifguardError
from sifguard.fileio import root_only_dir


class AuditError(SifguardError):
    """The audit log cannot be written (reported; never changes a decision)."""


def _stamp() -> dict:
    now = time.time()   # (time, not datetime: the per-task hooks import as little as they can)
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z",
            "host": os.uname().nodename, "pid": os.getpid(), "uid": os.getuid()}


USER_FIELD_CAP = 1000   # characters of a user-supplied field (argv, operand, command) kept in a record


def _cap(v):
    if isinstance(v, (list, tuple)):
        v = " ".join(map(str, v))
    if isinstance(v, str) and len(v) > USER_FIELD_CAP:
        return v[:USER_FIELD_CAP] + f"…[{len(v) - USER_FIELD_CAP} more]"
    return v


def write_decision(path: str | None, verdict, *, metrics: str | None = None, **extra) -> None:
    """A verdict, with what the caller adds (hook, job, command line, …). The verdict's own
    fields come first and user-supplied fields are capped, so no argv can push the decision
    out of a record. `metrics`: the policy's metrics.textfile, whose counter for this
    decision goes up by one first (sifguard/enforce/counters.py; never raises)."""
    _write(path, _counted(metrics, verdict.as_dict() | _stamp() | {k: _cap(v) for k, v in extra.items()}))


def write_event(path: str | None, *, metrics: str | None = None, **fields) -> None:
    """A record that is not a verdict: e.g. an image deferred to the runtime hooks
    (`metrics` as for write_decision)."""
    first = {k: fields[k] for k in ("decision", "reason", "image") if k in fields}
    _write(path, _counted(metrics, {k: _cap(v) for k, v in first.items()} | _stamp()
                          | {k: _cap(v) for k, v in fields.items()}))


def _counted(metrics: str | None, record: dict) -> dict:
    """`record`, its node counter raised by one first when the policy keeps them."""
    if metrics:
        from sifguard.enforce import counters
        counters.count(metrics, record.get("hook"), record.get("decision"), counters.record_class(record))
    return record


def _write(path: str | None, record: dict) -> None:
    if not path:
        return
    line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
    try:
        _append(path, line)
    except OSError as e:
        if not isinstance(e, PermissionError):
            raise AuditError(f"cannot write audit log {path}: {e.strerror}") from None
        # an unprivileged hook (the shim runs as the job's user) cannot write the root-owned
        # log: the record goes to syslog (authpriv), which users cannot rewrite either
        import syslog
        syslog.openlog("sifguard", syslog.LOG_PID, syslog.LOG_AUTHPRIV)
        syslog.syslog(syslog.LOG_NOTICE, line.decode().rstrip("\n")[:8000])


def _append(path: str, line: bytes) -> None:
    """Append to the log. Root (the prolog, the SPANK helper) creates its directory and
    file, and writes only into a directory that it owns and no one else can write; anyone
    else (the shim, as the job's user) never creates anything: PermissionError sends the
    record to syslog instead. Only a regular file is written (opened non-blocking: a FIFO
    planted as the log cannot stall a hook)."""
    d = os.path.dirname(path) or "."
    if os.geteuid() == 0:
        root_only_dir(d)
        flags = os.O_CREAT
    else:
        flags = 0
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | flags, 0o644)
    except FileNotFoundError:
        raise PermissionError(errno.EACCES, "not created by an unprivileged hook") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.write(fd, line)
    finally:
        os.close(fd)
