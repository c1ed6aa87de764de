"""Audit records that went to the journal instead of the file.

A hook running as the job's user (the shim) cannot append to the root-owned audit log; its
record goes to syslog (identifier `sifguard`, facility authpriv: sifguard/enforce/audit.py),
which on a Debian node is journald. This reads them back with `journalctl -o json`.

Attestation: the writer stamps each record with its `uid`; journald adds `_UID`, the
sender's uid as the kernel gave it (SO_PASSCRED), which the sender cannot choose. A record
whose `uid` is not `_UID` was not written by our writer as that user (anyone may log with
the identifier `sifguard`): it is not counted and shows as `unattested`. A record that
passes was still written by a process of that user, so its content is that user's word —
the report says how many records came this way.

Output is the same stream as reader.records: a record (dict) or the name of a line problem.
Memory is bounded by one journal entry (MAX_LINE) whatever the journal's size."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator

from sifguard.audit.reader import MAX_LINE, LogError, _parse

IDENTIFIER = "sifguard"


def command(directory: str | None, since: float | None, until: float | None) -> list[str]:
    """The journalctl command line: only our identifier, oldest first, the window pushed down."""
    cmd = ["journalctl", "--no-pager", "--quiet", "--output=json"]
    if directory:
        cmd.append(f"--directory={directory}")
    if since is not None:
        cmd.append(f"--since=@{int(since)}")          # whole seconds, rounded down: the record
    if until is not None:                              # times still decide (ReportBuilder.add)
        cmd.append(f"--until=@{int(until) + 1}")
    return cmd + [f"SYSLOG_IDENTIFIER={IDENTIFIER}"]


def attest(entry: dict, user_of=lambda uid: None) -> dict | str:
    """The audit record inside one journal entry, or the line problem it is. `user_of(uid)`:
    that uid's login name where this host knows it — a record of a non-root sender whose
    context names another user is unattested (a user cannot pin a refusal on someone else)."""
    msg = entry.get("MESSAGE")
    if isinstance(msg, list):                          # journald's form for a non-UTF-8 message
        try:
            msg = bytes(msg).decode()
        except (ValueError, TypeError):
            return "malformed"
    if not isinstance(msg, str):
        return "malformed"
    rec = _parse(msg.encode() + b"\n")
    if not isinstance(rec, dict):
        return rec
    uid, sender = rec.get("uid"), entry.get("_UID")
    if not isinstance(uid, int) or isinstance(uid, bool) or not isinstance(sender, str) or sender != str(uid):
        return "unattested"
    ctx = rec.get("context")
    claimed = ctx.get("user") if isinstance(ctx, dict) else None
    if uid != 0 and claimed is not None and claimed != str(uid):   # (the hooks name an unknown uid by number)
        name = user_of(uid)
        if name is not None and claimed != name:
            return "unattested"
    return rec


def login_name(uid: int) -> str | None:
    import pwd
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return None


def records(directory: str | None = None, since: float | None = None, until: float | None = None,
            max_line: int = MAX_LINE) -> Iterator[dict | str]:
    """Records from the local journal, or from the journal files under `directory` (e.g.
    collected from the nodes by systemd-journal-remote)."""
    where = f"journal {directory}" if directory else "journal"
    with tempfile.TemporaryFile() as err:
        try:
            env = {"LC_ALL": "C", "PATH": os.environ.get("PATH") or "/usr/bin:/bin"}
            p = subprocess.Popen(command(directory, since, until), stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=err, env=env)
        except OSError as e:
            raise LogError(f"{where}: cannot run journalctl: {e.strerror}") from None
        try:
            while True:
                line = p.stdout.readline(max_line + 1)
                if not line:
                    break
                if len(line) > max_line and not line.endswith(b"\n"):
                    while line and not line.endswith(b"\n"):
                        line = p.stdout.readline(max_line + 1)
                    yield "oversized"
                    continue
                entry = _parse(line)
                yield attest(entry, login_name) if isinstance(entry, dict) else entry
        finally:
            p.stdout.close()
            if p.poll() is None:
                p.terminate()
            rc = p.wait()
        if rc != 0:
            err.seek(0)
            text = " ".join(err.read(4000).decode(errors="replace").split())
            raise LogError(f"{where}: journalctl failed (exit {rc}): {text or 'no message'}")
