"""On-disk caches of revocation answers (OCSP responses, CRLs).

Entries are the raw DER as received, so every use re-validates signature, CertID and
freshness — a corrupt or forged file is simply not used. Writes are atomic (temp file
+ rename in the same directory). A shared directory (e.g. on the cluster filesystem)
is consulted after the node-local one and written when writable, so a thousand nodes
starting the same job ask the responder about once per validity window.
"""

from __future__ import annotations

import hashlib
import os


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

    def get(self, kind: str, key: str) -> list[bytes]:
        """Every cached copy, local first (callers use the first one that validates)."""
        out = []
        for d in self.dirs:
            try:
                with open(os.path.join(d, kind, key), "rb") as f:
                    out.append(f.read(4 << 20))
            except OSError:
                continue
        return out

    def put(self, kind: str, key: str, data: bytes) -> None:
        for d in self.dirs:
            sub = os.path.join(d, kind)
            try:
                os.makedirs(sub, mode=0o755, exist_ok=True)
                tmp = os.path.join(sub, f".{key}.{os.getpid()}.tmp")
                with open(tmp, "wb") as f:
                    f.write(data)
                os.chmod(tmp, 0o644)
                os.replace(tmp, os.path.join(sub, key))
            except OSError:
                continue   # read-only or full cache: caching is an optimisation only
