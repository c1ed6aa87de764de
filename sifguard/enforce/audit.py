"""The JSON-lines decision log — the one writer every hook and the CLI go through.

One line per decision or deferral, stamped here (time, host, pid, uid), appended with
a single O_APPEND write so lines from concurrent deciders never interleave."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket

from sifguard.errors import SifguardError


class AuditError(SifguardError):
    """The audit log cannot be written (reported; never changes a decision)."""


def _stamp() -> dict:
    return {"time": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "host": socket.gethostname(), "pid": os.getpid(), "uid": os.getuid()}


def write_decision(path: str | None, verdict, **extra) -> None:
    """A verdict, with what the caller adds (hook, job, command line, …)."""
    _write(path, _stamp() | extra | verdict.as_dict())


def write_event(path: str | None, **fields) -> None:
    """A record that is not a verdict: e.g. an image deferred to the runtime hooks."""
    _write(path, _stamp() | fields)


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
    d = os.path.dirname(path)
    if d and not os.path.isdir(d):
        os.makedirs(d, mode=0o755, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
