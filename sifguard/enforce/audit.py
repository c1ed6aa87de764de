"""The JSON-lines decision log: one line per decision, appended atomically."""

from __future__ import annotations

import json
import os


class AuditError(Exception):
    pass


def append(path: str | None, record: dict) -> None:
    if not path:
        return
    line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
    try:
        d = os.path.dirname(path)
        if d and not os.path.isdir(d):
            os.makedirs(d, mode=0o755, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line)   # one write with O_APPEND: lines from concurrent deciders never interleave
        finally:
            os.close(fd)
    except OSError as e:
        raise AuditError(f"cannot write audit log {path}: {e.strerror}") from None
