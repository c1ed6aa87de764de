"""Static OCSP: pre-signed responses laid out for RFC 5019 GET, for nginx or a CDN.

A nonce-less GET request is `/<base64 of the DER request>`; the DER of a minimal
single-certificate request is deterministic, so each (certificate, hash) pair has one
URL. '/' inside the base64 becomes a directory level (and '//' collapses, as nginx
merges slashes), so the files map 1:1 onto request paths; a path ending in '/' stores
its answer as `index.ocsp` in that directory (see config/nginx-ocsp.conf). Re-run before nextUpdate
(e.g. from cron every validity/2); each file is replaced atomically.

Expired certificates are answered too, as `ca serve` answers them: every answer carries the
CA's archiveCutoff (its creation), so a `good` about an expired certificate stays evidence
for a signature time-stamped while it was valid (RFC 6960 §4.4.4).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re

from sifguard.ca import ocsp_response as oc
from sifguard.ca import store as castore


INDEX = "index.ocsp"   # a request whose base64 ends in '/' is a directory URL: its answer lives here


def request_path(der: bytes) -> str:
    rel = re.sub("/+", "/", base64.b64encode(der).decode()).lstrip("/")
    return rel + INDEX if rel.endswith("/") else rel


def export(s: castore.CAStore, out: str, sign_with: str = "responder", now: dt.datetime | None = None) -> int:
    validity = dt.timedelta(hours=s.config.get("ocsp_validity_hours", 4))
    issuer = s.intermediate
    key = s.key(castore.INT_KEY if sign_with == "issuer" else castore.OCSP_KEY)
    signer = oc.Signer(issuer, key, issuer if sign_with == "issuer" else s.responder, validity, s.created)
    now = now or dt.datetime.now(dt.timezone.utc)
    os.makedirs(out, exist_ok=True)
    manifest, n, skipped = [], 0, 0
    for row in s.rows():
        serial = int(row.serial, 16)
        for alg in ("sha1", "sha256"):
            der = oc.minimal_request(serial, issuer, alg)
            ans = signer.answer(oc.parse_request(der), lambda _s, r=row: (r.status, r.revoked_at, r.reason, r.invalidity_date),
                                now)
            rel = request_path(der)
            for path in (os.path.join(out, "by-serial", f"{row.serial}.{alg}.der"), os.path.join(out, rel)):
                try:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    castore.write_public(path, ans.der)
                except (NotADirectoryError, IsADirectoryError, FileExistsError):
                    # another request's path occupies this one's prefix (base64 '/' as a
                    # directory level): it stays answerable by `ca serve` and by-serial/
                    skipped += 1
                    rel = None
            manifest.append({"serial": row.serial, "hash": alg, "status": ans.status,
                             "certificate": row.effective_status(int(now.timestamp())),
                             "path": "/" + rel if rel else None,
                             "next_update": ans.next_update.strftime("%Y-%m-%dT%H:%M:%SZ")})
            n += 1
    castore.write_public(os.path.join(out, "manifest.json"),
                         json.dumps({"generated": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                     "valid_seconds": int(validity.total_seconds()),
                                     "responses": manifest}, indent=1).encode())
    return n
