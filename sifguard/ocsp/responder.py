"""The CA's HTTP service as a WSGI application: OCSP (RFC 6960 POST, RFC 5019 GET),
CRLs and CA certificates at the URLs baked into issued certificates, and RFC 3161
time-stamping at /tsa (sifguard.tsp.service).

`make_app(ca_dir)` is importable for any WSGI server; `sifguard ca serve` runs it behind
its own asyncio front (sifguard/ocsp/server.py, front.py). Every request reads the certificate's current status from SQLite (one
indexed read), so a revocation is visible on the next request without a restart;
answers to nonce-less requests are pre-signed, shared by all worker processes through
the CA database (so every worker returns the same bytes and ETag) and re-signed once
half their validity has passed or the status changed; requests with a nonce are
signed online with the nonce echoed.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import sqlite3
import threading
import urllib.parse
from email.utils import format_datetime

from cryptography.hazmat.primitives import serialization

from sifguard.ca import ocsp_response as oc
from sifguard.ca import store as castore

OCSP_TYPE = "application/ocsp-response"
ANSWER_KEY = "sifguard.ocsp_answer"     # environ: the OCSP Answer served (for sifguard.ocsp.metrics)
TSA_PATHS = frozenset({"/tsa", "/tsa/", "/tsa.pem"})   # sifguard.tsp.service; every other POST is OCSP


_validators: dict[bytes, tuple[str, str, str]] = {}   # per worker: der -> (ETag, Expires, Last-Modified)


def _cache_validators(ans: "oc.Answer") -> tuple[str, str, str]:
    """The cacheable answer's ETag and dates, computed once per pre-signed answer."""
    v = _validators.get(ans.der)
    if v is None:
        if len(_validators) > 4096:
            _validators.clear()
        v = _validators[ans.der] = (f'"{hashlib.sha256(ans.der).hexdigest()[:32]}"', _http_date(ans.next_update),
                                    _http_date(ans.this_update))
    return v


def _http_date(t: dt.datetime) -> str:
    return format_datetime(t.astimezone(dt.timezone.utc), usegmt=True)


def decode_get_path(path: str) -> bytes | None:
    """RFC 5019 GET: base64 of the DER request in the path, tolerating URL escaping,
    '+' turned into space, base64url, missing padding and doubled leading slashes."""
    s = path.lstrip("/")
    if s.startswith("ocsp/"):
        s = s[5:].lstrip("/")
    s = urllib.parse.unquote(s).replace(" ", "+").replace("-", "+").replace("_", "/")
    s = s.replace("\n", "").replace("\r", "").rstrip("=")
    if not s:
        return None
    try:
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


class ResponderApp:
    def __init__(self, ca_dir: str, passphrase: bytes | None = None, sign_with: str = "responder",
                 validity: dt.timedelta | None = None):
        self.store = castore.CAStore(ca_dir, passphrase)
        self.lock = threading.Lock()
        validity = validity or dt.timedelta(hours=self.store.config.get("ocsp_validity_hours", 4))
        issuer = self.store.intermediate
        cutoff = self.store.created     # the CA keeps every revocation, of expired certificates too
        if sign_with == "issuer":
            self.signer = oc.Signer(issuer, self.store.key(castore.INT_KEY), issuer, validity, cutoff)
        else:
            self.signer = oc.Signer(issuer, self.store.key(castore.OCSP_KEY), self.store.responder, validity, cutoff)
        # The root answers for the intermediate itself (signing as the root) when its key is here.
        try:
            root = self.store.root
            self.root_signer = oc.Signer(root, self.store.key(castore.ROOT_KEY), root, validity, cutoff)
        except Exception:  # noqa: BLE001 - offline or locked root key: intermediates via the root CRL only
            self.root_signer = None
        try:
            self.crl_key_ok = bool(self.store.key(castore.INT_KEY))
        except Exception:  # noqa: BLE001 - an encrypted key without passphrase: serve the stored CRL
            self.crl_key_ok = False
        self.sign_with = sign_with
        self.static = {
            "/root.crt": (self.store.root.public_bytes(serialization.Encoding.DER), "application/pkix-cert"),
            "/intermediate.crt": (issuer.public_bytes(serialization.Encoding.DER), "application/pkix-cert"),
            "/root.pem": (castore.pem(self.store.root), "application/x-pem-file"),
            "/intermediate.pem": (castore.pem(issuer), "application/x-pem-file"),
            "/ocsp-responder.pem": (castore.pem(self.store.responder), "application/x-pem-file"),
        }
        from sifguard.tsp.service import TsaEndpoint
        self.tsa = TsaEndpoint(self.store, self.lock)      # RFC 3161 at /tsa (its key loads here too)

    # --- OCSP ---------------------------------------------------------------
    def lookup(self, serial: int, by_root: bool = False):
        with self.lock:
            return self.store.status_of(serial, by_root)

    def answer(self, der: bytes | None, now: dt.datetime | None = None) -> oc.Answer:
        q = oc.parse_request(der) if der else None
        if q is None:
            return oc.MALFORMED
        now = now or dt.datetime.now(dt.timezone.utc)
        signer, name = self.signer, self.sign_with
        if not signer.serves(q) and self.root_signer is not None and self.root_signer.serves(q):
            signer, name = self.root_signer, "root"
        if q.nonce is not None or not signer.serves(q):
            return signer.answer(q, lambda s: self.lookup(s, name == "root"), now)
        with self.lock:
            rec, cached = self.store.status_and_cached(q.serial, q.alg, name)
        if rec is None:   # our issuer, a serial it never issued: signed `unknown`, never stored
            return signer.answer(q, lambda _s: None, now)
        ts = now.timestamp()
        if cached and cached[0] == json.dumps(list(rec)) and cached[2] - ts > signer.validity.total_seconds() / 2:
            return oc.Answer(cached[3], rec[0], dt.datetime.fromtimestamp(cached[1], dt.timezone.utc),
                             dt.datetime.fromtimestamp(cached[2], dt.timezone.utc), cacheable=True)
        a = signer.answer(q, lambda _s: rec, now)
        with self.lock:
            try:
                self.store.store_answer(q.serial, q.alg, name, list(rec), int(a.this_update.timestamp()),
                                        int(a.next_update.timestamp()), a.der)
            except sqlite3.OperationalError:
                pass   # busy or read-only CA dir: serve the fresh answer uncached
        return a

    # --- CRL ----------------------------------------------------------------
    def crl(self, issuer: str = "intermediate") -> bytes | None:
        with self.lock:
            latest = self.store.latest_crl(issuer)
            now = int(dt.datetime.now(dt.timezone.utc).timestamp())
            if self.crl_key_ok:
                period = self.store.config.get("crl_hours", 24) * 3600
                stale = latest is None or latest[1] - now < period / 2
                if issuer == "intermediate" and latest is not None and not stale:
                    newest_revocation = self.store.revision()[1]
                    this_update = self.store.db.execute(
                        "SELECT this_update FROM crls WHERE issuer=? AND number=?", (issuer, latest[0])).fetchone()[0]
                    stale = newest_revocation >= this_update
                if stale:
                    self.store.make_crl(issuer=issuer)
                    latest = self.store.latest_crl(issuer)
            return latest[2] if latest else None

    # --- WSGI ---------------------------------------------------------------
    def __call__(self, environ, start_response):
        # No hop-by-hop headers here (PEP 3333): the server decides persistence and says
        # `Connection: close` on a connection's last answer (sifguard/ocsp/front.py).
        start = start_response
        try:
            return self._route(environ, start)
        except Exception as e:  # noqa: BLE001 - never a 500 for OCSP clients: internalError instead
            import sys
            import traceback
            print(f"sifguard ca serve: internal error: {type(e).__name__}: {e}\n{traceback.format_exc()}",
                  file=sys.stderr, flush=True)
            environ[ANSWER_KEY] = oc.INTERNAL
            return self._ocsp(start, oc.INTERNAL)

    def _route(self, environ, start_response):
        self.store.reconnect_after_fork()
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/") or "/"
        if path in TSA_PATHS:
            return self.tsa(environ, start_response, "/tsa.pem" if path == "/tsa.pem" else "/tsa")
        if method == "POST":
            ans = environ[ANSWER_KEY] = self.answer(self._body(environ))
            return self._ocsp(start_response, ans)
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, POST"), ("Content-Length", "0")])
            return [b""]
        if path in self.static:
            body, ctype = self.static[path]
            return self._plain(start_response, "200 OK", body, ctype, "max-age=3600, public")
        if path in ("/crl.der", "/crl", "/crl.pem", "/root-crl.der"):
            der = self.crl("root" if path == "/root-crl.der" else "intermediate")
            if der is None:
                return self._plain(start_response, "404 Not Found", b"no CRL\n", "text/plain", "no-store")
            if path == "/crl.pem":
                from cryptography import x509
                der = x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM)
            return self._plain(start_response, "200 OK", der, "application/pkix-crl", "max-age=300, public")
        if path.strip("/") in ("", "ocsp"):
            text = f"sifguard OCSP responder for {self.store.config['name']}\n".encode()
            return self._plain(start_response, "200 OK", text, "text/plain", "no-store")
        raw = environ.get("REQUEST_URI") or environ.get("RAW_URI") or ""
        ans = environ[ANSWER_KEY] = self.answer(decode_get_path(raw.split("?")[0] if raw.startswith("/") else path))
        etag = _cache_validators(ans)[0] if ans.cacheable else f'"{hashlib.sha256(ans.der).hexdigest()[:32]}"'
        if ans.cacheable and environ.get("HTTP_IF_NONE_MATCH") == etag:
            start_response("304 Not Modified", [("ETag", etag)])
            return [b""]
        return self._ocsp(start_response, ans, etag)

    def _body(self, environ) -> bytes | None:
        try:
            n = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        if n <= 0 or n > oc.MAX_REQUEST:
            return None               # refused without reading a huge body
        try:
            data = environ["wsgi.input"].read(n)
        except (OSError, ValueError):
            return None
        return data if len(data) == n else None

    def _ocsp(self, start_response, ans: oc.Answer, etag: str | None = None):
        headers = [("Content-Type", OCSP_TYPE), ("Content-Length", str(len(ans.der)))]
        if ans.cacheable and ans.next_update is not None:
            now = dt.datetime.now(dt.timezone.utc)
            max_age = max(0, int((ans.next_update - now).total_seconds()))
            etag, expires, last_modified = _cache_validators(ans)
            headers += [("Cache-Control", f"max-age={max_age}, public, no-transform, must-revalidate"),
                        ("Expires", expires), ("Last-Modified", last_modified), ("ETag", etag)]
        elif ans.next_update is not None:
            headers.append(("Cache-Control", "no-cache, no-store"))   # nonce'd: for this client only
        else:
            headers.append(("Cache-Control", "max-age=0, no-cache"))  # unauthorized / malformed
        start_response("200 OK", headers)
        return [ans.der]

    @staticmethod
    def _plain(start_response, status, body: bytes, ctype: str, cache: str):
        start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body))),
                                ("Cache-Control", cache)])
        return [body]


def make_app(ca_dir: str, passphrase: bytes | None = None, sign_with: str = "responder",
             validity: dt.timedelta | None = None) -> ResponderApp:
    """WSGI entry point for other servers, e.g. `gunicorn 'sifguard.ocsp.responder:from_env()'`."""
    return ResponderApp(ca_dir, passphrase, sign_with, validity)


def from_env():
    """WSGI app configured from SIFGUARD_CA_DIR (and SIFGUARD_SIGN_WITH)."""
    import os
    return make_app(os.environ["SIFGUARD_CA_DIR"], sign_with=os.environ.get("SIFGUARD_SIGN_WITH", "responder"))
