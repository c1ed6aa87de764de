"""On-disk caches of revocation answers (OCSP responses, CRLs).

Entries are the raw DER as received, so every use re-validates signature, CertID and
freshness — a corrupt or forged file is simply not used. Reads take only regular files
and at most a size cap (a FIFO, a device or a huge file planted in a shared directory
neither hangs nor bloats a decision). Writes are atomic (temp file + rename in the same
directory). A shared directory (e.g. on the cluster filesystem) is consulted after the
node-local one and written when writable, so a thousand nodes starting the same job ask
the responder about once per validity window.

Keys are flat file names; `entries(kind, prefix)` lists every copy whose key starts with
a prefix (CRLs are keyed issuer-first, so all the CRLs known from one issuer can be
consulted for a revocation, whatever URL they came from).
"""

from __future__ import annotations

import hashlib
import os

from sifguard.ocsp.answers import RevocationError
from sifguard.ocsp.transport import read_regular_file

MAX_ENTRIES = 32          # per prefix and directory: a stuffed shared directory costs a bounded time


class DirCache:
    def __init__(self, dirs: list[str | None]):
        self.dirs = [d for d in dirs if d]

    @staticmethod
    def key(*parts: str | bytes) -> str:
        h = hashlib.sha256()
        for p in parts:
            h.update(p if isinstance(p, bytes) else p.encode())
            h.update(b"\0")
        return h.hexdigest()

    def get(self, kind: str, key: str, cap: int = 4 << 20) -> list[bytes]:
        """Every cached copy, local first (callers use the first one that validates)."""
        out = []
        for d in self.dirs:
            try:
                out.append(read_regular_file(os.path.join(d, kind, key), cap))
            except RevocationError:
                continue
        return out

    def entries(self, kind: str, prefix: str, cap: int = 4 << 20) -> list[bytes]:
        """Every cached copy whose key starts with `prefix`, local directory first."""
        out = []
        for d in self.dirs:
            sub = os.path.join(d, kind)
            try:
                names = sorted(n for n in os.listdir(sub) if n.startswith(prefix))[:MAX_ENTRIES]
            except OSError:
                continue
            for n in names:
                try:
                    out.append(read_regular_file(os.path.join(sub, n), cap))
                except RevocationError:
                    continue
        return out

    def put(self, kind: str, key: str, data: bytes) -> None:
        for d in self.dirs:
            sub = os.path.join(d, kind)
            try:
                os.makedirs(sub, mode=0o755, exist_ok=True)
                tmp = os.path.join(sub, f".{key}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
                try:
                    os.unlink(tmp)           # a leftover of a crashed writer with our pid
                except FileNotFoundError:
                    pass
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(tmp, 0o644)
                os.replace(tmp, os.path.join(sub, key))
            except OSError:
                continue   # read-only or full cache: caching is an optimisation only
