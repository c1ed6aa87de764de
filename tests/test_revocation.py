"""Revocation-aware decisions against two real responders on 127.0.0.1 — `sifguard ca
serve` and the independent `openssl ocsp -index` — plus hostile canned responders
(foreign key, wrong CertID, replayed nonce, down, never answering), per mode."""
import datetime as dt
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from conftest import OpensslOcsp, Server, ca_site, free_port, ocsp_probe, responder_policy, run_cli
from pki import cert as mkcert, new_key
from sifguard.enforce.decide import Engine
from sifguard.ocsp.client import Checker
from sifguard.policy.decide import JobContext
from sifguard.policy.loader import load
from sifguard.policy.model import Revocation, Responder


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    d = tmp_path_factory.mktemp("site")
    out = ca_site(d, "Rev Site", ("alice", "eve", "mallory", "trudy"), "--ocsp-validity-hours", "1")
    ca, port = out["ca"], out["port"]
    (d / "issuer.pem").write_bytes(out["issuer"].public_bytes(serialization.Encoding.PEM))
    srv = Server(ca, port=port)
    out["url"] = srv.url
    yield out
    srv.stop()


def checker(tmp_path, **kw):
    kw.setdefault("cache_dir", str(tmp_path / f"cache-{time.monotonic_ns()}"))
    kw.setdefault("timeout", 2)
    return Checker(Revocation(**kw))


# --- against sifguard's responder -------------------------------------------------------
def test_good_then_cached(site, tmp_path):
    c = checker(tmp_path)
    st = c.check(site["alice"], site["issuer"])
    assert (st.status, st.source) == ("good", "ocsp")
    st = c.check(site["alice"], site["issuer"])
    assert (st.status, st.source) == ("good", "cache (ocsp)")


def test_corrupt_cache_entries_ignored(site, tmp_path):
    c = checker(tmp_path)
    c.check(site["alice"], site["issuer"])
    for root, _, files in os.walk(c.cfg.cache_dir):
        for f in files:
            open(os.path.join(root, f), "wb").write(b"\x30\x03garbage")
    st = c.check(site["alice"], site["issuer"])
    assert (st.status, st.source) == ("good", "ocsp")


def test_shared_cache_is_used(site, tmp_path):
    shared = str(tmp_path / "shared")
    a = checker(tmp_path, shared_cache_dir=shared)
    a.check(site["alice"], site["issuer"])
    b = checker(tmp_path, shared_cache_dir=shared, responders=(Responder("*", "http://127.0.0.1:9/"),))
    st = b.check(site["alice"], site["issuer"])
    assert (st.status, st.source) == ("good", "cache (ocsp)")


def test_revocation_takes_effect_after_cached_validity(site, tmp_path):
    c = checker(tmp_path)
    assert c.check(site["mallory"], site["issuer"]).status == "good"
    assert run_cli("ca", "revoke", "--ca", site["ca"], "--cert", site["d"] / "mallory.pem",
                   "--reason", "keyCompromise").rc == 0
    time.sleep(1.0)
    st = c.check(site["mallory"], site["issuer"])     # the cached answer is still valid: still good
    assert (st.status, st.source) == ("good", "cache (ocsp)")
    later = checker(tmp_path, cache_dir=c.cfg.cache_dir)
    later.now = lambda: dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1, minutes=10)
    st = later.check(site["mallory"], site["issuer"])  # past nextUpdate: cache unusable, asks again
    assert st.status in ("revoked", "error")
    fresh = checker(tmp_path)
    st = fresh.check(site["mallory"], site["issuer"])
    assert (st.status, st.source) == ("revoked", "ocsp") and "keyCompromise" in st.reason.replace("key_compromise", "keyCompromise")


def test_crl_only(site, tmp_path):
    """OCSP unreachable (override to a dead port): the CRL from the certificate's CRLDP decides."""
    dead = (Responder("*", f"http://127.0.0.1:{free_port()}/"),)
    assert run_cli("ca", "revoke", "--ca", site["ca"], "--cert", site["d"] / "trudy.pem").rc == 0
    c = checker(tmp_path, responders=dead)
    st = c.check(site["trudy"], site["issuer"])
    assert (st.status, st.source) == ("revoked", "crl")
    st = c.check(site["alice"], site["issuer"])
    assert (st.status, st.source) == ("good", "cache (crl)")
    off = checker(tmp_path, responders=dead, crl_fallback=False)
    assert off.check(site["alice"], site["issuer"]).status == "error"


def test_crl_from_file_url_and_stale_crl(site, tmp_path):
    from sifguard.ocsp.client import RevocationError
    c = checker(tmp_path)
    crl = open(site["ca"] / "crl.der", "rb").read()
    assert c._valid_crl(crl, site["issuer"]) is not None
    c.now = lambda: dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)
    with pytest.raises(RevocationError, match="stale"):
        c._valid_crl(crl, site["issuer"])
    with pytest.raises(RevocationError, match="another issuer|signature"):
        checker(tmp_path)._valid_crl(crl, site["alice"])


def test_nonce_roundtrip(site, tmp_path):
    st = checker(tmp_path, nonce=True).check(site["alice"], site["issuer"])
    assert st.status == "good"


# --- against openssl's responder --------------------------------------------------------
@pytest.fixture(scope="module")
def openssl_responder(site):
    d = site["d"]
    lines = []
    for who, status in (("alice", "V"), ("eve", "R")):
        c = site[who]
        exp = c.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
        rev = dt.datetime.now(dt.timezone.utc).strftime("%y%m%d%H%M%SZ") if status == "R" else ""
        lines.append(f"{status}\t{exp}\t{rev}\t{c.serial_number:X}\tunknown\t/CN={who}\n")
    (d / "index.txt").write_text("".join(lines))
    srv = OpensslOcsp(d / "index.txt", site["ca"] / "ocsp-responder.pem", site["ca"] / "ocsp-responder.key",
                      d / "issuer.pem", ocsp_probe(site["alice"], site["issuer"]), "-nmin", "5")
    yield srv.url
    srv.stop()


@pytest.mark.parametrize("who,want", [("alice", "good"), ("eve", "revoked"), ("mallory", "unknown")])
def test_openssl_responder_statuses(site, openssl_responder, tmp_path, who, want):
    c = checker(tmp_path, responders=(Responder("CN=Rev Site Issuing CA*", openssl_responder),))
    st = c.check(site[who], site["issuer"])
    assert st.status == want, st


def test_openssl_responder_stale(site, openssl_responder, tmp_path):
    c = checker(tmp_path, responders=(Responder("*", openssl_responder),), crl_fallback=False)
    c.now = lambda: dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=30)   # -nmin 5: stale by then
    st = c.check(site["alice"], site["issuer"])
    assert st.status == "error" and "stale" in st.reason


# --- hostile responders -----------------------------------------------------------------
class Canned:
    """An HTTP responder on 127.0.0.1 that answers every POST with `body(request)`."""

    def __init__(self, body):

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                req = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                data = body(req)
                self.send_response(200)
                self.send_header("Content-Type", "application/ocsp-response")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _response(site, who, key, responder_cert, status=ocsp.OCSPCertStatus.GOOD, nonce=None, certs=None,
              this_update=None, next_update=None, about=None):
    now = dt.datetime.now(dt.timezone.utc)
    b = ocsp.OCSPResponseBuilder().add_response(
        about or site[who], site["issuer"], hashes.SHA256(), status, this_update or now,
        next_update or now + dt.timedelta(hours=1), None, None).responder_id(
        ocsp.OCSPResponderEncoding.HASH, responder_cert)
    if certs:
        b = b.certificates(certs)
    if nonce:
        b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _ca_key(site, name):
    return serialization.load_pem_private_key(open(site["ca"] / name, "rb").read(), None)


def hostile(site, kind):
    resp_cert = x509.load_pem_x509_certificate(open(site["ca"] / "ocsp-responder.pem", "rb").read())
    resp_key = _ca_key(site, "ocsp-responder.key")
    if kind == "foreign-key":
        k = new_key("ec-p256")
        fc = mkcert(k, "Evil Responder", eku=(x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING,))
        return lambda req: _response(site, "alice", k, fc, certs=[fc])
    if kind == "delegate-without-eku":
        k = new_key("ec-p256")
        ikey = _ca_key(site, "intermediate.key")
        fc = mkcert(k, "Not A Responder", ikey, site["issuer"], eku=(x509.oid.ExtendedKeyUsageOID.CODE_SIGNING,))
        return lambda req: _response(site, "alice", k, fc, certs=[fc])
    if kind == "wrong-certid":
        return lambda req: _response(site, "alice", resp_key, resp_cert, certs=[resp_cert], about=site["eve"])
    if kind == "replayed-nonce":
        return lambda req: _response(site, "alice", resp_key, resp_cert, certs=[resp_cert], nonce=b"x" * 16)
    if kind == "future":
        t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
        return lambda req: _response(site, "alice", resp_key, resp_cert, certs=[resp_cert], this_update=t,
                                     next_update=t + dt.timedelta(hours=1))
    if kind == "stale":
        t = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)
        return lambda req: _response(site, "alice", resp_key, resp_cert, certs=[resp_cert], this_update=t,
                                     next_update=t + dt.timedelta(hours=1))
    if kind == "unknown":
        return lambda req: _response(site, "alice", resp_key, resp_cert, certs=[resp_cert],
                                     status=ocsp.OCSPCertStatus.UNKNOWN)
    if kind == "garbage":
        return lambda req: b"\x30\x03\x0a\x01\x00garbage"
    raise ValueError(kind)


@pytest.mark.parametrize("kind,why", [
    ("foreign-key", "not issued by the certificate's issuer"), ("delegate-without-eku", "OCSPSigning"),
    ("wrong-certid", "CertID"), ("replayed-nonce", "nonce"), ("future", "future"),
    ("stale", "stale"), ("garbage", "not an OCSP response"),
])
def test_hostile_responses_rejected(site, tmp_path, kind, why):
    srv = Canned(hostile(site, kind))
    try:
        c = checker(tmp_path, responders=(Responder("*", srv.url),), crl_fallback=False, nonce=True)
        st = c.check(site["alice"], site["issuer"])
        assert st.status == "error" and why in st.reason, st
    finally:
        srv.stop()


class Silent:
    """Accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def stop(self):
        self.sock.close()
        for c in self.conns:
            c.close()


# --- decisions per mode -------------------------------------------------------------------
def _engine(site, tmp_path, mode, url, crl=False, audit=None):
    return Engine(load(responder_policy(tmp_path / f"p-{mode}.yaml", site, mode, url, crl, audit)))


@pytest.mark.parametrize("kind", ["down", "silent", "foreign-key", "wrong-certid", "replayed-nonce", "stale", "unknown"])
@pytest.mark.parametrize("mode", ["enforce", "soft-fail", "off"])
def test_verdict_per_mode(site, tmp_path, kind, mode):
    srv = None
    if kind == "down":
        url = f"http://127.0.0.1:{free_port()}/"
    elif kind == "silent":
        srv = Silent()
        url = srv.url
    else:
        srv = Canned(hostile(site, kind))
        url = srv.url
    try:
        eng = _engine(site, tmp_path, mode, url)
        t = time.monotonic()
        v = eng.decide(str(site["d"] / "alice.sif"))
        took = time.monotonic() - t
    finally:
        if srv:
            srv.stop()
    assert took < 4, took     # bounded by the 1 s timeout (plus signing checks)
    if mode == "off":
        assert v.allowed and v.revocation_source == "off"
    elif kind == "unknown":
        assert not v.allowed and "unknown" in v.reason    # unknown is never good, not even in soft-fail
    elif mode == "enforce":
        assert not v.allowed and "could not be established" in v.reason, v.reason
    else:
        assert v.allowed and "soft-fail" in v.reason, v.reason
    rec = json.loads(open(tmp_path / "audit.jsonl").read().splitlines()[-1])
    assert rec["allowed"] == v.allowed and rec["rule"] == v.rule


def test_decision_through_ca_serve_and_revoked(site, tmp_path):
    eng = _engine(site, tmp_path, "enforce", site["url"] + "/")
    v = eng.decide(str(site["d"] / "alice.sif"), JobContext(user="alice"))
    assert v.allowed and v.revocation_source == "ocsp" and v.signers[0]["email"] == ["alice@example.org"], v.reason
    assert run_cli("ca", "revoke", "--ca", site["ca"], "--cert", site["d"] / "eve.pem").rc == 0
    time.sleep(1.0)
    v = _engine(site, tmp_path, "enforce", site["url"] + "/").decide(str(site["d"] / "eve.sif"))
    assert not v.allowed and "revoked" in v.reason
    v = _engine(site, tmp_path, "soft-fail", site["url"] + "/").decide(str(site["d"] / "eve.sif"))
    assert not v.allowed and "revoked" in v.reason     # soft-fail forgives outages, not revocations
