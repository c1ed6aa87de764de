"""Site CA: issuance profile, revocation, CRL and the OCSP responder, with real
`openssl` as the independent peer and a real `sifguard ca serve` on 127.0.0.1."""
import base64
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.parse

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from conftest import DATA, Server, run_cli, split_pem

TIMEOUT = 5


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    d = tmp_path_factory.mktemp("ca")
    ca_dir = d / "ca"
    port = __import__("conftest").free_port()
    r = run_cli("ca", "init", "--ca", ca_dir, "--name", "Test Site", "--url", f"http://127.0.0.1:{port}")
    assert r.rc == 0, r
    for who in ("alice", "bob", "carol"):
        r = run_cli("ca", "issue", "--ca", ca_dir, "--cn", who, "--email", f"{who}@example.org",
                    "--out-key", d / f"{who}.key", "--out", d / f"{who}.pem")
        assert r.rc == 0, r
        leaf, inter = split_pem(d / f"{who}.pem")
        (d / f"{who}-leaf.pem").write_text(leaf)
    (d / "issuer.pem").write_text(inter)
    srv = Server(ca_dir, port=port)
    yield {"dir": ca_dir, "d": d, "url": srv.url, "root": str(ca_dir / "root.pem"),
           "issuer": str(d / "issuer.pem"), "srv": srv}
    srv.stop()


def leaf(ca, who):
    return x509.load_pem_x509_certificate(open(ca["d"] / f"{who}-leaf.pem", "rb").read())


def openssl_ocsp(ca, who, *extra, digest=()):
    p = subprocess.run(["openssl", "ocsp", *digest, "-issuer", ca["issuer"], "-cert", str(ca["d"] / f"{who}-leaf.pem"),
                        "-url", ca["url"], "-CAfile", ca["root"], "-timeout", "5", *extra],
                       capture_output=True, text=True, timeout=20)
    return p.stdout + p.stderr


# --- layout and profile ---------------------------------------------------------------
def test_layout_and_modes(ca):
    d = ca["dir"]
    assert os.stat(d).st_mode & 0o777 == 0o700
    for k in ("root.key", "intermediate.key", "ocsp-responder.key"):
        assert os.stat(d / k).st_mode & 0o777 == 0o600
    assert os.stat(ca["d"] / "alice.key").st_mode & 0o777 == 0o600
    for f in ("root.pem", "intermediate.pem", "ocsp-responder.pem", "crl.pem", "crl.der", "ca.db"):
        assert (d / f).exists()


def test_issued_profile(ca):
    c = leaf(ca, "alice")
    ext = {e.oid: e for e in c.extensions}
    assert ext[ExtensionOID.KEY_USAGE].critical and ext[ExtensionOID.KEY_USAGE].value.digital_signature
    assert list(ext[ExtensionOID.EXTENDED_KEY_USAGE].value) == [ExtendedKeyUsageOID.CODE_SIGNING]
    assert ext[ExtensionOID.BASIC_CONSTRAINTS].value.ca is False
    for oid in (ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
                ExtensionOID.AUTHORITY_INFORMATION_ACCESS, ExtensionOID.CRL_DISTRIBUTION_POINTS):
        assert oid in ext
    aia = {a.access_method._name: a.access_location.value for a in ext[ExtensionOID.AUTHORITY_INFORMATION_ACCESS].value}
    assert aia["OCSP"].startswith(ca["url"]) and aia["caIssuers"].endswith("/intermediate.crt")
    assert 0 < c.serial_number < 1 << 159 and c.serial_number.bit_length() > 64
    assert c.subject.rfc4514_string() == "CN=alice,O=Test Site"


def test_openssl_verifies_issued_chain(ca):
    p = subprocess.run(["openssl", "verify", "-untrusted", ca["issuer"], "-CAfile", ca["root"],
                        str(ca["d"] / "alice-leaf.pem")], capture_output=True, text=True)
    assert p.returncode == 0 and ": OK" in p.stdout


def test_csr_key_stays_with_user_and_ca_decides_subject(ca, tmp_path):
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes",
                    "-keyout", tmp_path / "u.key", "-out", tmp_path / "u.csr", "-subj", "/CN=root/O=Evil"],
                   check=True, capture_output=True)
    r = run_cli("ca", "issue", "--ca", ca["dir"], "--cn", "dave", "--csr", tmp_path / "u.csr", "--out", tmp_path / "u.pem")
    assert r.rc == 0, r
    c = x509.load_pem_x509_certificate(open(tmp_path / "u.pem", "rb").read())
    assert c.subject.rfc4514_string() == "CN=dave,O=Test Site"
    k = serialization.load_pem_private_key(open(tmp_path / "u.key", "rb").read(), None)
    assert c.public_key().public_numbers() == k.public_key().public_numbers()
    # a CSR whose signature does not verify is refused
    der = bytearray(x509.load_pem_x509_csr(open(tmp_path / "u.csr", "rb").read()).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 1
    (tmp_path / "bad.csr").write_bytes(bytes(der))
    r = run_cli("ca", "issue", "--ca", ca["dir"], "--cn", "x", "--csr", tmp_path / "bad.csr", "--out", tmp_path / "x.pem")
    assert r.rc == 2 and not (tmp_path / "x.pem").exists()


def test_encrypted_ca(tmp_path):
    pf = tmp_path / "pass"
    pf.write_text("correct horse\n")
    assert run_cli("ca", "init", "--ca", tmp_path / "eca", "--name", "E", "--key-type", "ed25519",
                   "--passphrase-file", pf).rc == 0
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "eca" / "intermediate.key").read_bytes()
    r = run_cli("ca", "issue", "--ca", tmp_path / "eca", "--cn", "x", "--out-key", tmp_path / "x.key", "--out", tmp_path / "x.pem")
    assert r.rc == 2 and "passphrase" in r.err and not (tmp_path / "x.pem").exists()
    r = run_cli("ca", "issue", "--ca", tmp_path / "eca", "--cn", "x", "--out-key", tmp_path / "x.key",
                "--out", tmp_path / "x.pem", "--passphrase-env", "P", env={"P": "correct horse"})
    assert r.rc == 0, r
    # Ed25519 CA: our verifier accepts the chain (pyca's Web PKI validator would not)
    img = tmp_path / "i.sif"
    img.write_bytes(open(os.path.join(DATA, "apptainer", "images", "one-group.sif"), "rb").read())
    assert run_cli("sign", img, "--key", tmp_path / "x.key", "--cert", tmp_path / "x.pem").rc == 0
    assert run_cli("verify", img, "--roots", tmp_path / "eca" / "root.pem").rc == 0


@pytest.mark.parametrize("kt", ["ec-p384", "rsa-3072"])
def test_key_types(tmp_path, kt):
    assert run_cli("ca", "init", "--ca", tmp_path / "c", "--name", "K", "--key-type", kt).rc == 0
    assert run_cli("ca", "issue", "--ca", tmp_path / "c", "--cn", "x", "--key-type", kt,
                   "--out-key", tmp_path / "x.key", "--out", tmp_path / "x.pem").rc == 0


def test_init_refuses_existing_ca(ca):
    r = run_cli("ca", "init", "--ca", ca["dir"], "--name", "Again")
    assert r.rc == 2 and "already exists" in r.err


# --- OCSP with openssl as the client ---------------------------------------------------
def test_openssl_ocsp_good_then_revoked(ca):
    for extra in ((), ("-no_nonce",)):
        out = openssl_ocsp(ca, "bob", *extra)
        assert "Response verify OK" in out and ": good" in out, out
    assert run_cli("ca", "revoke", "--ca", ca["dir"], "--cert", ca["d"] / "bob.pem", "--reason", "keyCompromise").rc == 0
    time.sleep(1.0)
    for extra in ((), ("-no_nonce",)):
        out = openssl_ocsp(ca, "bob", *extra)
        assert "Response verify OK" in out and ": revoked" in out and "keyCompromise" in out, out


def test_nonce_echo_and_sha256_certid(ca):
    out = openssl_ocsp(ca, "alice", digest=("-sha256",))
    assert "Response verify OK" in out and ": good" in out and "WARNING" not in out, out


def test_sign_with_issuer(ca, tmp_path):
    srv = Server(ca["dir"], "--sign-with", "issuer")
    try:
        p = subprocess.run(["openssl", "ocsp", "-issuer", ca["issuer"], "-cert", str(ca["d"] / "alice-leaf.pem"),
                            "-url", srv.url, "-CAfile", ca["root"], "-resp_text", "-timeout", "5"],
                           capture_output=True, text=True, timeout=20)
        out = p.stdout + p.stderr
        assert "Response verify OK" in out and ": good" in out
        assert "Test Site Issuing CA" in out.split("Responder Id")[1].split("\n")[0] or "Responder Id: " in out
        resp = ocsp.load_der_ocsp_response(_post(srv.url, _req(ca, "alice")).content)
        assert resp.certificates == [] and resp.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(
            x509.load_pem_x509_certificate(open(ca["issuer"], "rb").read()).public_key()).digest
    finally:
        srv.stop()


def test_openssl_crl_check(ca, tmp_path):
    run_cli("ca", "revoke", "--ca", ca["dir"], "--cert", ca["d"] / "carol.pem")
    out = tmp_path / "crl.pem"
    assert run_cli("ca", "crl", "--ca", ca["dir"], "--out", out).rc == 0
    p = subprocess.run(["openssl", "verify", "-crl_check", "-CRLfile", out, "-CAfile", ca["root"], "-untrusted",
                        ca["issuer"], str(ca["d"] / "carol-leaf.pem")], capture_output=True, text=True)
    assert p.returncode != 0 and "revoked" in p.stdout + p.stderr
    n1 = x509.load_pem_x509_crl(out.read_bytes()).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert run_cli("ca", "crl", "--ca", ca["dir"], "--out", out, "--der", "--next-update-hours", "2").rc == 0
    crl = x509.load_der_x509_crl(out.read_bytes())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > n1
    assert dt.timedelta(hours=1.9) < crl.next_update_utc - crl.last_update_utc <= dt.timedelta(hours=2)
    # the CRL served at the URL in the certificates reflects the revocation too
    served = x509.load_der_x509_crl(requests.get(ca["url"] + "/crl.der", timeout=TIMEOUT).content)
    assert served.get_revoked_certificate_by_serial_number(leaf(ca, "carol").serial_number) is not None


def test_ca_certs_served(ca):
    r = requests.get(ca["url"] + "/intermediate.crt", timeout=TIMEOUT)
    assert r.headers["Content-Type"] == "application/pkix-cert"
    assert x509.load_der_x509_certificate(r.content).subject.rfc4514_string() == "CN=Test Site Issuing CA,O=Test Site"
    assert requests.get(ca["url"] + "/root.crt", timeout=TIMEOUT).status_code == 200


def test_list(ca):
    r = run_cli("ca", "list", "--ca", ca["dir"], "--json")
    rows = json.loads(r.out)["certificates"]
    by_cn = {x["cn"]: x for x in rows}
    assert by_cn["bob"]["status"] == "revoked" and by_cn["bob"]["reason"] == "keyCompromise"
    assert by_cn["alice"]["status"] == "valid" and by_cn["alice"]["email"] == ["alice@example.org"]
    r = run_cli("ca", "list", "--ca", ca["dir"], "--json", "--status", "revoked")
    assert {x["cn"] for x in json.loads(r.out)["certificates"]} >= {"bob"}
    assert "alice" not in r.out


# --- the responder over raw HTTP --------------------------------------------------------
def _req(ca, who, alg=hashes.SHA1(), nonce=None):
    issuer = x509.load_pem_x509_certificate(open(ca["issuer"], "rb").read())
    b = ocsp.OCSPRequestBuilder().add_certificate(leaf(ca, who), issuer, alg)
    if nonce:
        b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
    return b.build().public_bytes(serialization.Encoding.DER)


def _post(url, body, ctype="application/ocsp-request"):
    return requests.post(url + "/", data=body, headers={"Content-Type": ctype}, timeout=TIMEOUT)


def _status(content):
    return ocsp.load_der_ocsp_response(content).response_status.name


def test_sha256_answered_with_sha256(ca):
    r = _post(ca["url"], _req(ca, "alice", hashes.SHA256()))
    resp = ocsp.load_der_ocsp_response(r.content)
    assert resp.hash_algorithm.name == "sha256" and resp.certificate_status == ocsp.OCSPCertStatus.GOOD


def test_cache_headers_and_etag(ca):
    b64 = base64.b64encode(_req(ca, "alice")).decode()
    r = requests.get(f"{ca['url']}/{b64}", timeout=TIMEOUT)
    h = r.headers
    assert h["Content-Type"] == "application/ocsp-response"
    cc = h["Cache-Control"]
    assert "public" in cc and "no-transform" in cc and "must-revalidate" in cc and "max-age=" in cc
    max_age = int(cc.split("max-age=")[1].split(",")[0])
    assert 3600 < max_age <= 4 * 3600
    assert h["Expires"] and h["Last-Modified"] and h["ETag"]
    r2 = requests.get(f"{ca['url']}/{b64}", headers={"If-None-Match": h["ETag"]}, timeout=TIMEOUT)
    assert r2.status_code == 304
    # pre-signed: the same bytes for the same question
    assert requests.get(f"{ca['url']}/{b64}", timeout=TIMEOUT).content == r.content


def test_nonce_echoed_and_not_cached(ca):
    a = ocsp.load_der_ocsp_response(_post(ca["url"], _req(ca, "alice", nonce=b"n" * 16)).content)
    assert a.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"n" * 16
    r = _post(ca["url"], _req(ca, "alice", nonce=b"m" * 16))
    assert "no-store" in r.headers["Cache-Control"]


@pytest.mark.parametrize("mangle", ["plain", "urlescaped", "plus-to-space", "base64url", "nopad", "double-slash"])
def test_rfc5019_get_tolerance(ca, mangle):
    der = _req(ca, "alice")
    # make sure the base64 holds '+' and '/' for the escaping cases: try nonces until it does
    b64 = base64.b64encode(der).decode()
    path = {"plain": b64, "urlescaped": urllib.parse.quote(b64, safe=""),
            "plus-to-space": b64.replace("+", " "), "base64url": base64.urlsafe_b64encode(der).decode(),
            "nopad": b64.rstrip("="), "double-slash": "/" + b64}[mangle]
    r = requests.get(f"{ca['url']}/{path}", timeout=TIMEOUT)
    assert r.status_code == 200 and _status(r.content) == "SUCCESSFUL", (mangle, path)


def _unknown_req(ca, serial, alg=hashes.SHA1(), nonce=None):
    issuer = x509.load_pem_x509_certificate(open(ca["issuer"], "rb").read())
    from sifguard.ca.ocsp_response import issuer_hashes
    nh, kh = issuer_hashes(issuer, alg.name)
    b = ocsp.OCSPRequestBuilder().add_certificate_by_hash(nh, kh, serial, alg)
    if nonce:
        b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
    return b.build().public_bytes(serialization.Encoding.DER)


def _responder_signed(ca, resp):
    """The response verifies under the delegated responder certificate it carries, which
    the issuing CA issued."""
    issuer = x509.load_pem_x509_certificate(open(ca["issuer"], "rb").read())
    (signer,) = resp.certificates
    signer.verify_directly_issued_by(issuer)
    from cryptography.hazmat.primitives.asymmetric import ec
    signer.public_key().verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(resp.signature_hash_algorithm))
    assert resp.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(signer.public_key()).digest


# Was: "unknown serials get unauthorized". RFC 6960 §2.2: a responder that serves the
# issuer answers a serial that issuer never issued with a SIGNED `unknown` (clients treat it
# as not good); `unauthorized` stays for issuers it does not serve.
@pytest.mark.parametrize("alg", [hashes.SHA1(), hashes.SHA256()], ids=["sha1", "sha256"])
def test_unknown_serial_of_our_issuer_is_signed_unknown(ca, alg):
    for serial, nonce in ((0xDEADBEEF, None), (random.getrandbits(159), None), (0xDEADBEEF, b"n" * 16)):
        r = _post(ca["url"], _unknown_req(ca, serial, alg, nonce))
        resp = ocsp.load_der_ocsp_response(r.content)
        assert resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
        assert resp.certificate_status == ocsp.OCSPCertStatus.UNKNOWN and resp.serial_number == serial
        assert resp.hash_algorithm.name == alg.name
        _responder_signed(ca, resp)
        # an unknown answer is for this request only: never cached by an HTTP cache, no ETag
        assert "no-store" in r.headers["Cache-Control"] and "ETag" not in r.headers
        if nonce:
            assert resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    # RFC 5019 GET answers the same
    der = _unknown_req(ca, 0xC0FFEE)
    r = requests.get(f"{ca['url']}/{base64.b64encode(der).decode()}", timeout=TIMEOUT)
    assert ocsp.load_der_ocsp_response(r.content).certificate_status == ocsp.OCSPCertStatus.UNKNOWN


def test_unknown_serial_openssl_peer_verifies_unknown(ca):
    """openssl as the independent client: the signature verifies and the status is unknown."""
    p = subprocess.run(["openssl", "ocsp", "-issuer", ca["issuer"], "-serial", "0xDEADBEEF", "-url", ca["url"],
                        "-CAfile", ca["root"], "-timeout", "5"], capture_output=True, text=True, timeout=20)
    out = p.stdout + p.stderr
    assert "Response verify OK" in out and ": unknown" in out, out


def test_foreign_issuer_unauthorized_max_age_0(ca):
    other = os.path.join(DATA, "apptainer", "certs")
    p = subprocess.run(["openssl", "ocsp", "-issuer", f"{other}/intermediate.pem", "-cert", f"{other}/leaf.pem",
                        "-no_nonce", "-reqout", "/dev/stdout"], capture_output=True)
    r = _post(ca["url"], p.stdout)
    assert _status(r.content) == "UNAUTHORIZED" and "max-age=0" in r.headers["Cache-Control"]
    # our issuer's name with another key (or the reverse) is another issuer: unauthorized
    issuer = x509.load_pem_x509_certificate(open(ca["issuer"], "rb").read())
    from sifguard.ca.ocsp_response import issuer_hashes
    nh, kh = issuer_hashes(issuer, "sha1")
    for bad in ((nh, b"\x00" * 20), (b"\x00" * 20, kh)):
        der = ocsp.OCSPRequestBuilder().add_certificate_by_hash(*bad, 0xDEADBEEF, hashes.SHA1()).build()
        assert _status(_post(ca["url"], der.public_bytes(serialization.Encoding.DER)).content) == "UNAUTHORIZED"


MALFORMED = [
    ("empty", b"", "application/ocsp-request"),
    ("garbage", b"garbage", "application/ocsp-request"),
    ("truncated", None, "application/ocsp-request"),
    ("wrong-content-type", b"\x30\x03\x02\x01\x00", "text/plain"),
    ("huge", b"\x30" * (2 << 20), "application/ocsp-request"),
]


@pytest.mark.parametrize("name,body,ctype", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_posts(ca, name, body, ctype):
    if body is None:
        body = _req(ca, "alice")[:-7]
    r = _post(ca["url"], body, ctype)
    assert r.status_code == 200 and _status(r.content) == "MALFORMED_REQUEST"


@pytest.mark.parametrize("path", ["!!!notbase64", "MEUwQzBBMD8w", "%ZZ", "a" * 5000, "ocsp/////"])
def test_malformed_gets(ca, path):
    r = requests.get(f"{ca['url']}/{path}", timeout=TIMEOUT)
    assert r.status_code in (200, 414, 400) and r.status_code != 500
    if r.status_code == 200 and r.headers["Content-Type"] == "application/ocsp-response":
        assert _status(r.content) == "MALFORMED_REQUEST"


@pytest.mark.parametrize("vec", sorted(f for f in os.listdir(os.path.join(DATA, "pyca-ocsp")) if f.endswith(".der")))
def test_pyca_vectors_never_500(ca, vec):
    body = open(os.path.join(DATA, "pyca-ocsp", vec), "rb").read()
    for r in (_post(ca["url"], body), requests.get(f"{ca['url']}/{base64.b64encode(body).decode()}", timeout=TIMEOUT)):
        assert r.status_code == 200
        assert _status(r.content) in ("MALFORMED_REQUEST", "UNAUTHORIZED")


def test_multi_certificate_request_refused_cleanly(ca):
    body = open(os.path.join(DATA, "pyca-ocsp", "req-multi-sha1.der"), "rb").read()
    assert _status(_post(ca["url"], body).content) == "MALFORMED_REQUEST"


def test_stalled_body_does_not_hang(ca):
    import socket
    s = socket.create_connection(("127.0.0.1", int(ca["url"].rsplit(":", 1)[1])), timeout=15)
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request\r\nContent-Length: 100\r\n\r\nabc")
    t = time.monotonic()
    data = s.recv(4096)
    s.close()
    assert time.monotonic() - t < 12
    assert b"500" not in data.split(b"\r\n")[0]
    # and the service still answers
    assert _status(_post(ca["url"], _req(ca, "alice")).content) == "SUCCESSFUL"


def test_method_not_allowed(ca):
    assert requests.put(ca["url"] + "/", data=b"x", timeout=TIMEOUT).status_code == 405


# --- static export ----------------------------------------------------------------------
def test_export_ocsp(ca, tmp_path):
    run_cli("ca", "revoke", "--ca", ca["dir"], "--cert", ca["d"] / "bob.pem")   # rc 2 if an earlier test did
    out = tmp_path / "www"
    r = run_cli("ca", "export-ocsp", "--ca", ca["dir"], "--out", out)
    assert r.rc == 0, r
    from sifguard.ocsp.export import request_path
    f = out / request_path(_req(ca, "alice"))
    resp = ocsp.load_der_ocsp_response(f.read_bytes())
    assert resp.certificate_status == ocsp.OCSPCertStatus.GOOD
    bob = ocsp.load_der_ocsp_response((out / "by-serial" / f"{leaf(ca, 'bob').serial_number:X}.sha256.der").read_bytes())
    assert bob.certificate_status == ocsp.OCSPCertStatus.REVOKED


# --- database integrity -----------------------------------------------------------------
CRASH_LOOP = r"""
import os, sys, random, subprocess
ca, out = sys.argv[1], sys.argv[2]
i = 0
while True:
    i += 1
    subprocess.run([sys.executable, "-m", "sifguard", "ca", "issue", "--ca", ca, "--cn", f"u{os.getpid()}-{i}",
                    "--out-key", f"{out}/{os.getpid()}-{i}.key", "--out", f"{out}/{os.getpid()}-{i}.pem"],
                   capture_output=True)
"""


def test_sigkill_during_issue_never_loses_a_certificate(tmp_path):
    ca_dir = tmp_path / "ca"
    assert run_cli("ca", "init", "--ca", ca_dir, "--name", "Crash").rc == 0
    out = tmp_path / "out"
    out.mkdir()
    rng = random.Random(11)
    from sifguard.ca.store import CAStore
    for round_ in range(6):
        # issue in a child, SIGKILL the child's whole process group at a random instant
        p = subprocess.Popen([sys.executable, "-m", "sifguard", "ca", "issue", "--ca", str(ca_dir), "--cn",
                              f"k{round_}", "--out-key", str(out / f"k{round_}.key"), "--out", str(out / f"k{round_}.pem")],
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 0.6))
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        # and a revoke killed the same way
        rows = CAStore(str(ca_dir)).rows("valid")
        if rows:
            q = subprocess.Popen([sys.executable, "-m", "sifguard", "ca", "revoke", "--ca", str(ca_dir), "--serial",
                                  rows[-1].serial], start_new_session=True, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.05, 0.5))
            os.killpg(q.pid, signal.SIGKILL)
            q.wait()
    s = CAStore(str(ca_dir))
    assert s.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    serials = {r.serial for r in s.rows()}
    for f in out.glob("*.pem"):
        c = x509.load_pem_x509_certificate(f.read_bytes())
        assert f"{c.serial_number:X}" in serials, f
    for r in s.rows():
        assert r.status in ("valid", "revoked") and (r.status == "valid") == (r.revoked_at is None)
        assert x509.load_pem_x509_certificate(r.pem.encode()).serial_number == int(r.serial, 16)
    assert run_cli("ca", "list", "--ca", ca_dir, "--json").rc == 0


def test_concurrent_issue_distinct_serials(tmp_path):
    ca_dir = tmp_path / "ca"
    assert run_cli("ca", "init", "--ca", ca_dir, "--name", "Conc").rc == 0
    procs = [subprocess.Popen([sys.executable, "-m", "sifguard", "ca", "issue", "--ca", str(ca_dir), "--cn", f"c{i}",
                               "--out-key", str(tmp_path / f"c{i}.key"), "--out", str(tmp_path / f"c{i}.pem")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(6)]
    assert all(p.wait(60) == 0 for p in procs)
    rows = json.loads(run_cli("ca", "list", "--ca", ca_dir, "--json").out)["certificates"]
    serials = [r["serial"] for r in rows if r["profile"] == "code-signing"]
    assert len(serials) == 6 == len(set(serials))


def test_bad_inputs(tmp_path, ca):
    run_cli("ca", "revoke", "--ca", ca["dir"], "--cert", ca["d"] / "bob.pem")   # so revoking again is an error
    for args in (["ca", "issue", "--ca", tmp_path / "nope", "--cn", "x", "--out-key", tmp_path / "k", "--out", tmp_path / "c"],
                 ["ca", "revoke", "--ca", ca["dir"], "--serial", "DEADBEEF"],
                 ["ca", "revoke", "--ca", ca["dir"], "--serial", "xyz"],
                 ["ca", "revoke", "--ca", ca["dir"], "--cert", ca["d"] / "bob.pem"],   # already revoked
                 ["ca", "issue", "--ca", ca["dir"], "--cn", "x", "--days", "0", "--out-key", tmp_path / "k", "--out", tmp_path / "c"],
                 ["ca", "issue", "--ca", ca["dir"], "--cn", "x", "--days", "100000", "--out-key", tmp_path / "k", "--out", tmp_path / "c"],
                 ["ca", "init", "--ca", tmp_path / "n", "--name", "x", "--url", "ftp://x"],
                 ["ca", "serve", "--ca", ca["dir"], "--listen", "nonsense"]):
        r = run_cli(*args)
        assert r.rc == 2 and r.err.strip() and "\n" not in r.err.strip(), (args, r)
    assert not (tmp_path / "c").exists()


def test_static_export_behind_real_nginx(ca, tmp_path):
    """config/nginx-ocsp.conf serves export-ocsp's files for RFC 5019 GETs (real nginx)."""
    import shutil
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        pytest.skip("nginx not installed (tests/run.sh installs it as root)")
    os.chmod(tmp_path, 0o755)
    www = tmp_path / "www"
    assert run_cli("ca", "export-ocsp", "--ca", ca["dir"], "--out", www).rc == 0
    port = __import__("conftest").free_port()
    conf = open(os.path.join(os.path.dirname(DATA), "..", "config", "nginx-ocsp.conf")).read()
    conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{port};").replace("/var/www/sifguard-ocsp", str(www))
    (tmp_path / "site.conf").write_text(conf)
    (tmp_path / "nginx.conf").write_text(
        f"{'user root; ' if os.geteuid() == 0 else ''}worker_processes 1; pid {tmp_path}/nginx.pid; error_log {tmp_path}/err; daemon off;\n"
        f"events {{ worker_connections 64; }}\nhttp {{ access_log off; client_body_temp_path {tmp_path}/b;"
        f" include {tmp_path}/site.conf; }}\n")
    p = subprocess.Popen([nginx, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        b64 = base64.b64encode(_req(ca, "alice", hashes.SHA256())).decode()
        for _ in range(50):
            try:
                r = requests.get(f"http://127.0.0.1:{port}/{b64}", timeout=TIMEOUT)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/ocsp-response"
        assert "max-age" in r.headers["Cache-Control"]
        resp = ocsp.load_der_ocsp_response(r.content)
        assert resp.certificate_status == ocsp.OCSPCertStatus.GOOD and resp.hash_algorithm.name == "sha256"
        r = requests.get(f"http://127.0.0.1:{port}/{urllib.parse.quote(b64, safe='')}", timeout=TIMEOUT)
        assert r.status_code == 200
    finally:
        p.terminate()
        p.wait(10)


def test_intermediate_status_answered_by_root(ca):
    """The root key answers for the intermediate (its AIA points at the same service)."""
    root = x509.load_pem_x509_certificate(open(ca["root"], "rb").read())
    inter = x509.load_pem_x509_certificate(open(ca["issuer"], "rb").read())
    der = ocsp.OCSPRequestBuilder().add_certificate(inter, root, hashes.SHA256()).build().public_bytes(
        serialization.Encoding.DER)
    resp = ocsp.load_der_ocsp_response(_post(ca["url"], der).content)
    assert resp.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert resp.responder_name == root.subject or resp.responder_key_hash
    # the leaf issuer's responder never vouches for a root-issued serial: the intermediate
    # never issued it, so it answers a signed `unknown` (was `unauthorized`, see above)
    from sifguard.ca.ocsp_response import issuer_hashes
    nh, kh = issuer_hashes(inter, "sha1")
    der = ocsp.OCSPRequestBuilder().add_certificate_by_hash(nh, kh, inter.serial_number, hashes.SHA1()).build()
    resp = ocsp.load_der_ocsp_response(_post(ca["url"], der.public_bytes(serialization.Encoding.DER)).content)
    assert resp.certificate_status == ocsp.OCSPCertStatus.UNKNOWN
    # nor the root for a leaf serial (the root issued only the intermediate)
    nh, kh = issuer_hashes(root, "sha1")
    der = ocsp.OCSPRequestBuilder().add_certificate_by_hash(nh, kh, leaf(ca, "alice").serial_number, hashes.SHA1())
    resp = ocsp.load_der_ocsp_response(_post(ca["url"], der.build().public_bytes(serialization.Encoding.DER)).content)
    assert resp.certificate_status == ocsp.OCSPCertStatus.UNKNOWN and resp.responder_key_hash is not None


def test_export_request_paths_with_trailing_slash(tmp_path):
    """A request whose base64 ends in '/' maps to a directory URL: stored as index.ocsp."""
    from sifguard.ocsp.export import INDEX, request_path
    der = next(bytes([0x30, 1, b]) for b in range(256) if base64.b64encode(bytes([0x30, 1, b])).endswith(b"/"))
    assert request_path(der).endswith("/" + INDEX)
    assert "/" not in request_path(b"\x30\x03abc")
