"""The store's names, pure: content address, index key, decision key, policy fingerprint."""

from __future__ import annotations

import hashlib
import json
import os
import struct

from sifguard import fileio

HEAD = 4096          # bytes of the source that go into its index key
TRUST_FILE_MAX = 4 << 20


def content_digest(size: int, rest: bytes, objects: list[tuple[int, int, int, str]]) -> str:
    """The content address of an image from one pass over its bytes: `rest` is the
    SHA-256 of every byte outside the objects' ranges, in file order; `objects` is
    (id, offset, size, "sha256:hex") for each object. The ranges are part of what is
    hashed, so the bytes outside them are fixed too: two files share an address only if
    they are byte-identical (barring a SHA-256 collision). Every byte is hashed once."""
    h = hashlib.sha256(b"sifguard-store-content-v1\0")
    h.update(struct.pack("<Q", size))
    h.update(rest)
    for oid, off, n, dg in sorted(objects):
        h.update(struct.pack("<IQQ", oid, off, n))
        h.update(dg.encode())
    return h.hexdigest()


def index_key(st: os.stat_result, head: bytes) -> str:
    """The index key of an open source file: its identity (any write, truncate, rename
    over it or `touch` changes ctime, which users cannot set) and its first bytes — which
    only someone who can read it knows (so the index does not let a user who can merely
    `stat` a file reach its verified copy)."""
    h = hashlib.sha256(b"sifguard-store-index-v1\0")
    h.update(struct.pack("<QQQqq", st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    h.update(head)
    return h.hexdigest()


def file_identity(st: os.stat_result) -> dict:
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns}


def read_head(fd: int, size: int) -> bytes:
    return os.pread(fd, min(HEAD, size), 0)


def decision_key(digest: str, policy_fp: str, candidates: tuple[str, ...]) -> str:
    """A decision depends on the image's content, the policy (its rules, modes, trust
    material) and which of its rules can apply — not on who asked: the job context and
    the image's path only choose the candidate rules."""
    doc = json.dumps([digest, policy_fp, list(candidates)], separators=(",", ":"))
    return hashlib.sha256(b"sifguard-store-decision-v1\0" + doc.encode()).hexdigest()


LOCAL_ONLY = ("path", "audit_log", "image_cache", "metrics_textfile")     # top-level settings that never change a decision
LOCAL_ONLY_REVOCATION = ("cache_dir", "shared_cache_dir")
TRUST_KINDS = ("roots", "intermediates", "tsa_roots")   # hashed by content, never by path


def policy_fingerprint(policy) -> str:
    """SHA-256 over what a decision depends on: the compiled policy without its node-local
    settings (where the file, the caches and the audit log are; source line numbers) and the
    bytes of its trust material (roots, intermediates and TSA roots, files or directories —
    content, not paths). Nodes whose policies differ only in local paths share decisions; any change
    to a rule, a mode or a trusted certificate makes new keys. Reads only small files; the
    caller must be able to read them (OSError otherwise)."""
    import dataclasses

    def strip(v):          # source line numbers, at every level
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k != "line"}
        if isinstance(v, (list, tuple)):
            return [strip(x) for x in v]
        return v
    doc = strip(dataclasses.asdict(policy))
    for k in LOCAL_ONLY:
        doc.pop(k, None)
    for k in TRUST_KINDS:
        doc.pop(k, None)
    for k in LOCAL_ONLY_REVOCATION:
        doc.get("revocation", {}).pop(k, None)
    h = hashlib.sha256(b"sifguard-store-policy-v3\0")     # v3: verification levels, quorum, TSA roots
    h.update(json.dumps(doc, sort_keys=True, default=str).encode())
    for kind in TRUST_KINDS:
        digests = []
        for p in getattr(policy, kind):
            files = sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith((".pem", ".crt", ".cer"))) \
                if os.path.isdir(p) else [p]
            digests += [hashlib.sha256(fileio.read_regular(f, TRUST_FILE_MAX)).hexdigest() for f in files]
        h.update(f"{kind}:{','.join(sorted(digests))};".encode())
    return h.hexdigest()
