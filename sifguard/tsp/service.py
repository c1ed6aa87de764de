"""`ca serve`'s time-stamping endpoint (RFC 3161 section 3.4, HTTP transport), a WSGI piece
the responder (sifguard/ocsp/responder.py) routes /tsa and /tsa.pem to.

POST /tsa with Content-Type application/timestamp-query → 200 application/timestamp-reply
(a token or an RFC 3161 rejection, from sifguard.tsp.authority); another content type → 415;
a body over 64 KiB → 413, never read. GET /tsa → a short text/plain description; GET
/tsa.pem → the TSA certificate. A CA without a TSA → 404 naming `ca tsa-init`; a TSA whose
key cannot be opened (encrypted, no passphrase) → 503 — the OCSP side is not affected.

The Authority (and its key) is loaded once, before the workers fork, like the OCSP signer.
Each token gets a fresh random 159-bit serial (unique across workers and restarts without a
database write), and the TSA certificate's status is read from the CA database per request
(one indexed read): once `ca revoke` lands, the TSA answers systemFailure rejections.
"""

from __future__ import annotations

import datetime as dt
import sys

from sifguard.errors import SifguardError

QUERY_TYPE = "application/timestamp-query"
REPLY_TYPE = "application/timestamp-reply"


class TsaEndpoint:
    def __init__(self, store, lock):
        from sifguard.ca import tsa
        from sifguard.ca.profiles import random_serial
        from sifguard.tsp import authority
        self.store, self.lock = store, lock
        self._random_serial, self._authority_mod = random_serial, authority
        self.authority = None
        self.unavailable: tuple[str, str] | None = None
        if not tsa.present(store):
            self.unavailable = ("404 Not Found", f"no time-stamping authority in this CA: run "
                                                 f"'sifguard ca tsa-init --ca {store.path}'\n")
            return
        try:
            self.authority = tsa.load(store)
        except SifguardError as e:
            print(f"sifguard ca serve: time-stamping disabled: {e}", file=sys.stderr, flush=True)
            self.unavailable = ("503 Service Unavailable", f"time-stamping unavailable: {e}\n")
            return
        from cryptography.hazmat.primitives import serialization
        self.cert_pem = self.authority.cert.public_bytes(serialization.Encoding.PEM)
        self.serial = self.authority.cert.serial_number
        hashes = ", ".join(a.upper().replace("SHA", "SHA-") for a in authority.IMPRINT_LENGTHS)
        self.description = (
            f"sifguard time-stamping authority (RFC 3161) for {store.config['name']}\n"
            f"POST a TimeStampReq as {QUERY_TYPE} to this URL\n"
            f"policy {self.authority.policy}, accuracy {self.authority.accuracy} s, imprints {hashes}\n"
            f"certificate: /tsa.pem\n").encode()

    def __call__(self, environ, start_response, path: str):
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD", "POST") or (path == "/tsa.pem" and method == "POST"):
            allow = "GET" if path == "/tsa.pem" else "GET, POST"
            start_response("405 Method Not Allowed", [("Allow", allow), ("Content-Length", "0")])
            return [b""]
        if self.unavailable is not None:
            return _plain(start_response, self.unavailable[0], self.unavailable[1].encode())
        if path == "/tsa.pem":
            return _plain(start_response, "200 OK", self.cert_pem, "application/x-pem-file", "max-age=3600, public")
        if method != "POST":
            return _plain(start_response, "200 OK", self.description)
        ctype = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if ctype != QUERY_TYPE:
            return _plain(start_response, "415 Unsupported Media Type",
                          f"POST a TimeStampReq as {QUERY_TYPE}\n".encode())
        try:
            n = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            n = -1
        if n > self._authority_mod.MAX_REQUEST:
            return _plain(start_response, "413 Content Too Large",
                          f"time-stamp requests are at most {self._authority_mod.MAX_REQUEST} bytes\n".encode())
        body = b""
        if n > 0:
            try:
                body = environ["wsgi.input"].read(n)
            except (OSError, ValueError):
                body = b""
        return self._reply(start_response, self._answer(body))

    def _answer(self, body: bytes) -> bytes:
        try:
            with self.lock:
                rec = self.store.status_of(self.serial)
            if rec is not None and rec[0] == "revoked":
                return self._authority_mod.rejection("system_failure", "the TSA certificate is revoked")
            return self.authority.respond(body, dt.datetime.now(dt.timezone.utc), self._random_serial())
        except Exception as e:  # noqa: BLE001 - an RFC 3161 answer, never a 500, for TSA clients
            print(f"sifguard ca serve: time-stamping internal error: {type(e).__name__}: {e}",
                  file=sys.stderr, flush=True)
            return self._authority_mod.rejection("system_failure", "internal error")

    @staticmethod
    def _reply(start_response, der: bytes):
        start_response("200 OK", [("Content-Type", REPLY_TYPE), ("Content-Length", str(len(der))),
                                  ("Cache-Control", "no-store")])
        return [der]


def _plain(start_response, status: str, body: bytes, ctype: str = "text/plain", cache: str = "no-store"):
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Cache-Control", cache)])
    return [body]
