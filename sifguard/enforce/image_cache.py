"""The verified-image cache: an unchanged image is not re-hashed on every job step.

Keyed by (device, inode, size, mtime_ns, ctime_ns) of the open file plus the trust
roots in force; any write, truncate, rename-over or `touch` changes ctime, so it
invalidates the entry (users cannot set ctime). Entries hold what verification
found — each group's verified signers with their certificate chains and the object
digests — not a verdict: certificate validity, signer rules and revocation are
re-evaluated on every use. Entries are only read from, and written to, a directory
owned by root (or by the running user when not root) that no one else can write.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os

from cryptography import x509
from cryptography.hazmat.primitives import serialization


def _trusted_dir(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_uid in (0, os.geteuid()) and not st.st_mode & 0o022


def file_key(st: os.stat_result) -> dict:
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns}


class ImageCache:
    def __init__(self, directory: str | None, roots_id: str):
        self.dir = directory
        self.roots_id = roots_id

    def _name(self, st: os.stat_result) -> str:
        return hashlib.sha256(f"{st.st_dev}:{st.st_ino}:{self.roots_id}".encode()).hexdigest()

    def get(self, st: os.stat_result) -> dict | None:
        if not self.dir or not _trusted_dir(self.dir):
            return None
        p = os.path.join(self.dir, self._name(st))
        try:
            fst = os.stat(p)
            if fst.st_uid not in (0, os.geteuid()) or fst.st_mode & 0o022:
                return None
            with open(p, encoding="utf-8") as f:
                entry = json.load(f)
        except (OSError, ValueError):
            return None
        if entry.get("file") != file_key(st) or entry.get("roots") != self.roots_id:
            return None
        return entry

    def put(self, st: os.stat_result, record: dict) -> None:
        if not self.dir:
            return
        try:
            if not os.path.isdir(self.dir):
                os.makedirs(self.dir, mode=0o755)
            if not _trusted_dir(self.dir):
                return
            entry = record | {"file": file_key(st), "roots": self.roots_id}
            tmp = os.path.join(self.dir, f".{self._name(st)}.{os.getpid()}.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(entry, f)
            os.chmod(tmp, 0o644)
            os.replace(tmp, os.path.join(self.dir, self._name(st)))
        except OSError:
            pass   # an unwritable cache only costs time


def encode_chain(chain) -> list[str]:
    return [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chain]


def decode_chain(items: list[str]) -> list[x509.Certificate]:
    return [x509.load_der_x509_certificate(base64.b64decode(s)) for s in items]
