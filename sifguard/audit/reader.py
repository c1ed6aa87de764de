"""Stream audit records from log files (plain or gzip-rotated), in constant memory.

Yields one item per line: the record (a dict), or the name of the problem with that line —
`malformed` (not JSON, not UTF-8), `not-a-record` (JSON but not an object), `oversized`
(longer than MAX_LINE: skipped without being held), `partial` (a last line without its
newline that does not parse: a write still in progress, or a truncated rotation)."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator

from sifguard.errors import BadInputError

MAX_LINE = 1 << 20      # a record is a few KiB (user fields capped at 1000 characters by the writer)


class LogError(BadInputError):
    """An audit log cannot be read."""


def open_log(path: str):
    """A binary reader for a plain or gzip file (by its magic bytes, not its name)."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise LogError(f"{path}: cannot read audit log: {e.strerror}") from None
    try:
        magic = f.peek(2)[:2] if hasattr(f, "peek") else b""
        if magic == b"\x1f\x8b":
            return gzip.GzipFile(fileobj=f, mode="rb")
        return f
    except BaseException:
        f.close()
        raise


def records(path: str, max_line: int = MAX_LINE) -> Iterator[dict | str]:
    f = open_log(path)
    try:
        while True:
            try:
                line = f.readline(max_line + 1)
            except EOFError:            # a gzip file cut short (rotation or copy in progress)
                yield "partial"
                return
            except (OSError, zlib.error) as e:     # (gzip.BadGzipFile is an OSError)
                raise LogError(f"{path}: cannot read audit log: {getattr(e, 'strerror', None) or e}") from None
            if not line:
                return
            if len(line) > max_line and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):     # drain the rest of the long line
                    line = f.readline(max_line + 1)
                yield "oversized"
                continue
            yield _parse(line)
    finally:
        f.close()


def _parse(line: bytes) -> dict | str:
    complete = line.endswith(b"\n")
    text = line.strip()
    if not text:
        return "blank"
    try:
        rec = json.loads(text.decode())     # (str: skips json's encoding sniffing of bytes)
    except (ValueError, RecursionError):    # (UnicodeDecodeError is a ValueError)
        return "malformed" if complete else "partial"
    return rec if isinstance(rec, dict) else "not-a-record"
