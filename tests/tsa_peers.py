"""Independent RFC 3161 peers for tests: `openssl ts -reply` acting as a TSA (its own
`openssl ts` configuration, a TSA certificate made with cryptography's builders), served
over HTTP on 127.0.0.1 by a small threaded server so `sifguard sign --tsa` talks to it as
to any TSA. Every reply is made by the openssl binary; nothing here signs a token."""
from __future__ import annotations

import datetime as dt
import http.server
import os
import subprocess
import tempfile
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from pki import NOW, key_pem, name, new_key, pem, write

CONF = """[ tsa ]
default_tsa = tsa_config1
[ tsa_config1 ]
serial = {d}/serial
crypto_device = builtin
signer_cert = {d}/tsa.pem
certs = {d}/chain.pem
signer_key = {d}/tsa.key
signer_digest = sha256
default_policy = {policy}
other_policies = 1.2.3.4.5
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = {ess}
"""


def tsa_cert(key, issuer_key, issuer, cn="Test TSA", days=30, start=None, eku=(ExtendedKeyUsageOID.TIME_STAMPING,),
             eku_critical=True):
    start = start or NOW - dt.timedelta(hours=1)
    b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(issuer.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True))
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=eku_critical)
    return b.sign(issuer_key, hashes.SHA256())


class OpensslTsa:
    """A TSA run by `openssl ts -reply`, with its certificate issued by (issuer_key, issuer)."""

    def __init__(self, directory, issuer_key, issuer, chain=(), policy="1.2.3.4.1", ess="sha256", **cert_kw):
        self.dir = str(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.key = new_key("ec-p256")
        self.cert = tsa_cert(self.key, issuer_key, issuer, **cert_kw)
        write(os.path.join(self.dir, "tsa.key"), key_pem(self.key), 0o600)
        write(os.path.join(self.dir, "tsa.pem"), pem(self.cert))
        write(os.path.join(self.dir, "chain.pem"), pem(*chain) if chain else pem(issuer))
        write(os.path.join(self.dir, "serial"), b"01\n")
        self.conf = write(os.path.join(self.dir, "tsa.cnf"), CONF.format(d=self.dir, policy=policy, ess=ess).encode())
        self.lock = threading.Lock()
        self.server = None
        self.requests = 0

    def reply(self, query: bytes) -> bytes:
        with self.lock, tempfile.TemporaryDirectory() as t:
            q, r = os.path.join(t, "q.tsq"), os.path.join(t, "r.tsr")
            with open(q, "wb") as f:
                f.write(query)
            subprocess.run(["openssl", "ts", "-reply", "-config", self.conf, "-queryfile", q, "-out", r],
                           check=True, capture_output=True, timeout=30)
            self.requests += 1
            with open(r, "rb") as f:
                return f.read()

    def token(self, message: bytes) -> bytes:
        from sifguard.tsp import request
        q = request.request(message)
        return request.read_reply(self.reply(q.der), q)

    # --- over HTTP ------------------------------------------------------------------
    def serve(self) -> str:
        tsa = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = tsa.reply(self.rfile.read(min(n, 1 << 16)))
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/tsa"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
