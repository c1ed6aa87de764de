"""CA hardening: every input validated up front (one line, exit 2, nothing written),
CRL publication monotonic under concurrency, issuance crash-safe under SIGKILL."""
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa
from cryptography.x509.oid import NameOID

from conftest import run_cli
from sifguard.ca import files, inputs
from sifguard.ca.store import CAStore
from sifguard.errors import BadInputError, SifguardError


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    d = tmp_path_factory.mktemp("hca")
    assert run_cli("ca", "init", "--ca", d / "ca", "--name", "Hard Site").rc == 0
    return d / "ca"


def rows(ca_dir):
    return {r.serial: r for r in CAStore(str(ca_dir)).rows()}


def one_line_error(r):
    return r.rc == 2 and r.err.strip() and "\n" not in r.err.strip() and "internal error" not in r.err


def listing(d):
    return sorted(os.listdir(d))


# --- 3. inputs --------------------------------------------------------------------------
BAD_ISSUE = [
    (["--cn", ""], "--cn must not be empty"),
    (["--cn", " "], "--cn must not be empty"),
    (["--cn", "a" * 65], "at most 64"),
    (["--cn", "é" * 40], "bytes in UTF-8"),                  # 40 characters, 80 bytes
    (["--cn", " alice"], "white space"),
    (["--cn", "alice\n"], "U+000A"),
    (["--cn", "ali\x1bce"], "U+001B"),
    (["--cn", "ali\u202ece"], "U+202E"),                     # right-to-left override: a spoofing tool
    (["--cn", "ali\u200bce"], "U+200B"),
    (["--cn", "x", "--email", ""], "--email must not be empty"),
    (["--cn", "x", "--email", "alice"], "not an address"),
    (["--cn", "x", "--email", "alice@"], "not an address"),
    (["--cn", "x", "--email", "@example.org"], "not an address"),
    (["--cn", "x", "--email", "a b@example.org"], "invalid local part"),
    (["--cn", "x", "--email", "a..b@example.org"], "invalid local part"),
    (["--cn", "x", "--email", "a@-example.org"], "invalid domain"),
    (["--cn", "x", "--email", "a@example..org"], "invalid domain"),
    (["--cn", "x", "--email", "jürgen@example.org"], "ASCII"),
    (["--cn", "x", "--email", "a" * 65 + "@example.org"], "invalid local part"),
    (["--cn", "x", "--email", "a@" + "b" * 64 + ".org"], "invalid domain"),
    (["--cn", "x", "--email", "a@b\n.org"], "ASCII"),
    (["--cn", "x", "--days", "0"], "--days must be between"),
    (["--cn", "x", "--days", "-5"], "--days must be between"),
    (["--cn", "x", "--days", "99999999999999"], "--days must be between"),
    (["--cn", "x", "--days", "5000"], "outlive the issuing CA"),
]


@pytest.mark.parametrize("extra,msg", BAD_ISSUE, ids=[repr(e)[:40] for e, _ in BAD_ISSUE])
def test_issue_inputs(ca, tmp_path, extra, msg):
    before = len(rows(ca))
    r = run_cli("ca", "issue", "--ca", ca, *extra, "--out-key", tmp_path / "k.pem", "--out", tmp_path / "c.pem")
    assert one_line_error(r) and msg in r.err, r
    assert listing(tmp_path) == [] and len(rows(ca)) == before


def test_issue_output_paths(ca, tmp_path):
    (tmp_path / "exists.key").write_text("mine")
    (tmp_path / "adir").mkdir()
    before = len(rows(ca))
    for out_key, out, msg in ((tmp_path / "exists.key", tmp_path / "c.pem", "refusing to overwrite"),
                              (tmp_path / "k.pem", tmp_path / "k.pem", "same file"),
                              (tmp_path / "nodir" / "k.pem", tmp_path / "c.pem", "does not exist"),
                              (tmp_path / "k.pem", tmp_path / "nodir" / "c.pem", "does not exist"),
                              (tmp_path / "k.pem", tmp_path / "adir", "is a directory"),
                              (tmp_path / "adir", tmp_path / "c.pem", "is a directory")):
        r = run_cli("ca", "issue", "--ca", ca, "--cn", "x", "--out-key", out_key, "--out", out)
        assert one_line_error(r) and msg in r.err, (out_key, out, r)
    assert (tmp_path / "exists.key").read_text() == "mine"
    assert listing(tmp_path) == ["adir", "exists.key"] and len(rows(ca)) == before
    # --out pointing at a private key (a swapped argument) does not destroy it
    key = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"
    (tmp_path / "user.key").write_bytes(key)
    r = run_cli("ca", "issue", "--ca", ca, "--cn", "x", "--out-key", tmp_path / "new.key", "--out", tmp_path / "user.key")
    assert one_line_error(r) and "holds a private key" in r.err and (tmp_path / "user.key").read_bytes() == key
    # the same file through a symbolic link
    os.symlink(tmp_path / "target.pem", tmp_path / "link.pem")
    r = run_cli("ca", "issue", "--ca", ca, "--cn", "x", "--out-key", tmp_path / "target.pem", "--out", tmp_path / "link.pem")
    assert one_line_error(r) and "same file" in r.err and len(rows(ca)) == before


def test_empty_key_passphrases_refused(ca, tmp_path):
    (tmp_path / "empty").write_text("")
    r = run_cli("ca", "issue", "--ca", ca, "--cn", "x", "--out-key", tmp_path / "k.pem", "--out", tmp_path / "c.pem",
                "--out-key-passphrase-file", tmp_path / "empty")
    assert one_line_error(r) and "empty" in r.err and not (tmp_path / "k.pem").exists()
    r = run_cli("ca", "init", "--ca", tmp_path / "enc", "--name", "E", "--passphrase-file", tmp_path / "empty")
    assert one_line_error(r) and not (tmp_path / "enc").exists()


def test_limits_accepted_at_the_bound(ca, tmp_path):
    cn = "a" * 64
    email = "b" * 64 + "@" + "c" * 63 + "." + "c" * 63 + "." + "c" * 61          # 254 characters
    assert len(email) == 254
    r = run_cli("ca", "issue", "--ca", ca, "--cn", cn, "--email", email, "--out-key", tmp_path / "k", "--out", tmp_path / "c")
    assert r.rc == 0, r
    c = x509.load_pem_x509_certificate((tmp_path / "c").read_bytes())
    assert c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
    r = run_cli("ca", "issue", "--ca", ca, "--cn", "Jürgen Müller", "--out-key", tmp_path / "k2", "--out", tmp_path / "c2")
    assert r.rc == 0, r


BAD_INIT = [
    (["--name", ""], "--name must not be empty"),
    (["--name", "x" * 50], "at most 49"),                   # "<name> OCSP Responder" must fit 64
    (["--name", "Site\nEvil"], "U+000A"),
    (["--name", "S", "--url", ""], "--url must not be empty"),
    (["--name", "S", "--url", "ftp://h/"], "http(s)"),
    (["--name", "S", "--url", "http://"], "no host"),
    (["--name", "S", "--url", "http:///path"], "no host"),
    (["--name", "S", "--url", "http://u:pw@h/"], "credentials"),
    (["--name", "S", "--url", "http://h:70000/"], "out of range"),
    (["--name", "S", "--url", "http://h:x/"], "--url"),
    (["--name", "S", "--url", "http://h/?a=b"], "query or fragment"),
    (["--name", "S", "--url", "http://h/#f"], "query or fragment"),
    (["--name", "S", "--url", "http://bücher.example/"], "ASCII"),
    (["--name", "S", "--url", "http://h /"], "ASCII"),
    (["--name", "S", "--crl-hours", "0"], "--crl-hours"),
    (["--name", "S", "--crl-hours", "99999999999"], "--crl-hours"),
    (["--name", "S", "--ocsp-validity-hours", "-1"], "--ocsp-validity-hours"),
    (["--name", "S", "--ocsp-validity-hours", "100000"], "--ocsp-validity-hours"),
]


@pytest.mark.parametrize("extra,msg", BAD_INIT, ids=[repr(e)[:40] for e, _ in BAD_INIT])
def test_init_inputs(tmp_path, extra, msg):
    r = run_cli("ca", "init", "--ca", tmp_path / "ca", *extra)
    assert one_line_error(r) and msg in r.err, r
    assert not (tmp_path / "ca").exists()


def test_init_never_takes_over_a_used_directory(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    os.chmod(home, 0o755)
    (home / ".bashrc").write_text("x")
    r = run_cli("ca", "init", "--ca", home, "--name", "S")
    assert one_line_error(r) and "not empty" in r.err
    assert os.stat(home).st_mode & 0o777 == 0o755 and listing(home) == [".bashrc"]
    (tmp_path / "file").write_text("x")
    assert one_line_error(run_cli("ca", "init", "--ca", tmp_path / "file", "--name", "S"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli("ca", "init", "--ca", empty, "--name", "S").rc == 0


@pytest.mark.parametrize("serial,msg", [
    ("", "not hexadecimal"), ("xyz", "not hexadecimal"), ("DE_AD", "not hexadecimal"), ("+DEAD", "not hexadecimal"),
    ("-1", "not hexadecimal"), ("٣", "not hexadecimal"), ("DE AD", "not hexadecimal"), ("0", "positive"),
    ("00:00", "positive"), ("A" * 41, "longer than 20 octets"), ("80" + "00" * 19, "longer than 20 octets"),
    ("DEA:D", "byte pairs"), ("DE:ADB:EF", "byte pairs"), ("0x", "not hexadecimal"),
])
def test_revoke_serial_formats_refused(ca, serial, msg):
    r = run_cli("ca", "revoke", "--ca", ca, "--serial", serial)
    assert one_line_error(r) and msg in r.err, r


@pytest.mark.parametrize("reason", ["", "keycompromise", "removeFromCRL", "caCompromise", "AACompromise", "unspecified "])
def test_revoke_reasons_refused(ca, reason):
    r = run_cli("ca", "revoke", "--ca", ca, "--serial", "DEADBEEF", "--reason", reason)
    assert one_line_error(r) and "reason" in r.err, r


def test_revoke_serial_formats_accepted(ca, tmp_path):
    s = CAStore(str(ca))
    from sifguard.ca import profiles
    spellings = []
    for i, fmt in enumerate((lambda h: h.lower(), lambda h: "0x" + h, lambda h: ":".join(
            h.rjust(len(h) + len(h) % 2, "0")[j:j + 2] for j in range(0, len(h) + len(h) % 2, 2)),
            lambda h: "00" + h, lambda h: f"  {h}  ")):
        c = s.issue(profiles.generate_key("ec-p256").public_key(), f"fmt{i}", None, 30)
        spellings.append((c.serial_number, fmt(f"{c.serial_number:X}")))
    for n, spelled in spellings:
        r = run_cli("ca", "revoke", "--ca", ca, "--serial", spelled, "--reason", "superseded")
        assert r.rc == 0, (spelled, r)
        assert rows(ca)[f"{n:X}"].status == "revoked"
    assert inputs.serial("7F" + "FF" * 19) == "7F" + "FF" * 19         # exactly 20 octets


def test_revoke_cert_of_another_ca_with_a_colliding_serial(ca, tmp_path):
    """--cert names a certificate; one of another CA that happens to share a serial is not ours."""
    from pki import cert as make_cert, new_key, pem
    from sifguard.ca import profiles
    issued = CAStore(str(ca)).issue(profiles.generate_key("ec-p256").public_key(), "victim", None, 30)
    victim = rows(ca)[f"{issued.serial_number:X}"]
    k = new_key()
    forged = make_cert(k, victim.cn)
    forged = (x509.CertificateBuilder().subject_name(forged.subject).issuer_name(forged.issuer)
              .public_key(k.public_key()).serial_number(int(victim.serial, 16))
              .not_valid_before(forged.not_valid_before_utc).not_valid_after(forged.not_valid_after_utc)
              .sign(k, hashes.SHA256()))
    (tmp_path / "other.pem").write_bytes(pem(forged))
    r = run_cli("ca", "revoke", "--ca", ca, "--cert", tmp_path / "other.pem")
    assert one_line_error(r) and "not a certificate issued by this CA" in r.err
    assert rows(ca)[victim.serial].status == "valid"


@pytest.mark.parametrize("args,msg", [
    (["--next-update-hours", "0"], "--next-update-hours"),
    (["--next-update-hours", "-3"], "--next-update-hours"),
    (["--next-update-hours", "10000000000"], "--next-update-hours"),
    (["--out", "/nonexistent/dir/crl.pem"], "does not exist"),
])
def test_crl_inputs(ca, args, msg):
    before = CAStore(str(ca)).latest_crl()[0]
    r = run_cli("ca", "crl", "--ca", ca, *args)
    assert one_line_error(r) and msg in r.err, r
    assert CAStore(str(ca)).latest_crl()[0] == before


def test_export_out_refused(ca, tmp_path):
    (tmp_path / "file").write_text("x")
    for out, msg in (("", "must not be empty"), (tmp_path / "file", "not a directory"),
                     (tmp_path / "no" / "such" / "dir", "does not exist")):
        r = run_cli("ca", "export-ocsp", "--ca", ca, "--out", out)
        assert one_line_error(r) and msg in r.err, r
    assert listing(tmp_path) == ["file"]


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1:٨٠", ":80", "h:"])
def test_serve_listen_refused(ca, listen):
    assert one_line_error(run_cli("ca", "serve", "--ca", ca, "--listen", listen))


def _csr(key, algo=hashes.SHA256()):
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "root"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evil")]))
    return b.sign(key, algo).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("kind,msg", [
    ("dsa", "not allowed"),            # the one key policy: a refusal (exit 1), not bad input
    ("rsa-1024", "too small"),
    ("secp256k1", "not allowed"),
    ("ed448", "not allowed"),
    ("garbage", "not a certificate request"),
    ("empty", "not a certificate request"),
    ("cert", "not a certificate request"),
    ("huge", "larger than 1 MiB"),
])
def test_csr_refused(ca, tmp_path, kind, msg):
    if kind == "dsa":
        data = _csr(dsa.generate_private_key(2048))
    elif kind == "rsa-1024":
        data = _csr(rsa.generate_private_key(65537, 1024))
    elif kind == "secp256k1":
        data = _csr(ec.generate_private_key(ec.SECP256K1()))
    elif kind == "ed448":
        data = _csr(ed448.Ed448PrivateKey.generate(), None)
    elif kind == "garbage":
        data = b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n"
    elif kind == "empty":
        data = b""
    elif kind == "cert":
        data = (ca / "root.pem").read_bytes()
    else:
        data = b"0" * (2 << 20)
    (tmp_path / "r.csr").write_bytes(data)
    before = len(rows(ca))
    r = run_cli("ca", "issue", "--ca", ca, "--cn", "x", "--csr", tmp_path / "r.csr", "--out", tmp_path / "c.pem")
    if kind in ("dsa", "rsa-1024", "secp256k1", "ed448"):
        assert r.rc == 1 and "\n" not in r.err.strip() and msg in r.err, r
    else:
        assert one_line_error(r) and msg in r.err, r
    assert not (tmp_path / "c.pem").exists() and len(rows(ca)) == before


def test_csr_subject_and_extensions_ignored_ca_decides(ca, tmp_path):
    key = ec.generate_private_key(ec.SECP521R1())
    req = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hard Site Issuing CA")]))
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
           .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("ceo@example.org")]), critical=False)
           .sign(key, hashes.SHA512()))
    (tmp_path / "r.csr").write_bytes(req.public_bytes(serialization.Encoding.DER))      # DER works too
    r = run_cli("ca", "issue", "--ca", ca, "--cn", "dave", "--csr", tmp_path / "r.csr", "--out", tmp_path / "c.pem")
    assert r.rc == 0, r
    c = x509.load_pem_x509_certificate((tmp_path / "c.pem").read_bytes())
    assert c.subject.rfc4514_string() == "CN=dave,O=Hard Site"
    assert c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    with pytest.raises(x509.ExtensionNotFound):
        c.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    r = run_cli("ca", "issue", "--ca", ca, "--cn", "dave", "--csr", tmp_path / "r.csr", "--out", tmp_path / "d.pem",
                "--out-key-passphrase-file", tmp_path / "r.csr")
    assert one_line_error(r) and "goes with --out-key" in r.err


def test_library_errors_are_sifguard_errors(ca):
    s = CAStore(str(ca))
    pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    for bad in (dict(cn=""), dict(cn="a" * 65), dict(cn="x", email="nope"), dict(cn="x", days=0),
                dict(cn="x", days=10 ** 12)):
        kw = {"email": None, "days": 30, **bad}
        with pytest.raises(BadInputError):
            s.issue(pub, kw["cn"], kw["email"], kw["days"])
    with pytest.raises(SifguardError):
        s.revoke("DEADBEEF", "unspecified")
    with pytest.raises(SifguardError):
        s.revoke("1", "badReason")


# --- 4. monotonic CRL publication --------------------------------------------------------
WORKER = r"""
import subprocess, sys
ca, serials = sys.argv[1], sys.argv[2:]
for s in serials:
    r = subprocess.run([sys.executable, "-m", "sifguard", "ca", "revoke", "--ca", ca, "--serial", s], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
r = subprocess.run([sys.executable, "-m", "sifguard", "ca", "crl", "--ca", ca, "--der"], capture_output=True)
assert r.returncode == 0, r.stderr
"""


def _number(der: bytes) -> int:
    return x509.load_der_x509_crl(der).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_concurrent_publishing_is_monotonic(tmp_path):
    ca_dir = tmp_path / "ca"
    assert run_cli("ca", "init", "--ca", ca_dir, "--name", "Race").rc == 0
    s = CAStore(str(ca_dir))
    from sifguard.ca import profiles
    pub = profiles.generate_key("ec-p256").public_key()
    serials = [f"{s.issue(pub, f'r{i}', None, 30).serial_number:X}" for i in range(40)]
    seen, stop = [], threading.Event()

    def poll():
        while not stop.is_set():
            for name in ("crl.der", "crl.pem"):
                try:
                    data = (ca_dir / name).read_bytes()
                except FileNotFoundError:
                    continue
                crl = x509.load_der_x509_crl(data) if name.endswith("der") else x509.load_pem_x509_crl(data)
                seen.append((name, crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number))

    t = threading.Thread(target=poll)
    t.start()
    try:
        procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(ca_dir), *serials[i::8]],
                                  stderr=subprocess.PIPE, text=True) for i in range(8)]
        errs = [(p.wait(300), p.stderr.read()) for p in procs]
    finally:
        stop.set()
        t.join()
    assert all(rc == 0 for rc, _ in errs), errs
    for name in ("crl.der", "crl.pem"):
        seq = [n for f, n in seen if f == name]
        assert seq and all(a <= b for a, b in zip(seq, seq[1:])), (name, seq)
    latest = CAStore(str(ca_dir)).latest_crl()
    assert latest[0] >= 1 + 40 + 8                       # init + one per revocation + one per worker
    final = (ca_dir / "crl.der").read_bytes()
    assert _number(final) == latest[0] and final == latest[2]
    crl = x509.load_der_x509_crl(final)
    assert {f"{r.serial_number:X}" for r in crl} >= set(serials)
    assert _number(x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes()).public_bytes(
        serialization.Encoding.DER)) == latest[0]
    assert not [n for n in os.listdir(ca_dir) if files.TMP_MARK in n or ".tmp" in n]


def test_an_older_crl_never_replaces_a_newer_one(tmp_path):
    ca_dir = tmp_path / "ca"
    assert run_cli("ca", "init", "--ca", ca_dir, "--name", "Old").rc == 0
    s = CAStore(str(ca_dir))
    old = s.make_crl()
    new = s.make_crl()
    s.publish_crl(old)                                   # a slow publisher arriving late
    assert _number((ca_dir / "crl.der").read_bytes()) == _number(new.public_bytes(serialization.Encoding.DER))
    (ca_dir / "crl.der").write_bytes(b"corrupt")         # an unreadable file is replaced
    s.publish_crl(old)
    assert (ca_dir / "crl.der").read_bytes() == old.public_bytes(serialization.Encoding.DER)


# --- 5. crash-safe issuance --------------------------------------------------------------
def _leftovers(*dirs):
    return [os.path.join(d, n) for d in dirs for n in os.listdir(d) if files.TMP_MARK in n or ".tmp" in n]


def _pub_der(key_or_cert):
    k = key_or_cert.public_key()
    return k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_consistent(ca_dir, out):
    s = CAStore(str(ca_dir))
    assert s.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert s.db.execute("SELECT COUNT(*) FROM pending_issuance").fetchone()[0] == 0
    by_serial = {r.serial: r for r in s.rows()}
    for key_file in out.glob("*.key"):
        cert_file = key_file.with_suffix(".pem")
        assert cert_file.exists(), f"{key_file} without its certificate"
        assert os.stat(key_file).st_mode & 0o777 == 0o600
        key = serialization.load_pem_private_key(key_file.read_bytes(), None)
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        assert _pub_der(key) == _pub_der(cert), key_file
        assert by_serial[f"{cert.serial_number:X}"].status == "valid"
    for cert_file in out.glob("*.pem"):
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        assert f"{cert.serial_number:X}" in by_serial, cert_file
    # a valid leaf issued to a key file exists only together with that key
    keyed = {f"{x509.load_pem_x509_certificate(f.with_suffix('.pem').read_bytes()).serial_number:X}"
             for f in out.glob("*.key")}
    for r in by_serial.values():
        if r.profile == "code-signing" and r.cn.startswith("k") and r.status == "valid":
            assert r.serial in keyed, f"valid certificate {r.serial} ({r.cn}) whose key was never written"
        if r.status == "revoked" and r.reason == "cessationOfOperation":
            assert r.serial not in keyed
    assert not _leftovers(ca_dir, out), _leftovers(ca_dir, out)


def _wait_for_pending(ca_dir, p, limit=20.0):
    db = sqlite3.connect(f"file:{ca_dir}/ca.db?mode=ro", uri=True, timeout=5)
    deadline = time.monotonic() + limit
    try:
        while p.poll() is None and time.monotonic() < deadline:
            try:
                if db.execute("SELECT 1 FROM pending_issuance").fetchone():
                    return
            except sqlite3.OperationalError:
                pass
    finally:
        db.close()


def _kill_group(p):
    """SIGKILL the command's process group — unless it has already finished (then there is
    nothing to kill: that instant is a completed issuance)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_sigkill_during_issue_leaves_nothing_half_done(tmp_path):
    ca_dir = tmp_path / "ca"
    assert run_cli("ca", "init", "--ca", ca_dir, "--name", "Crash", "--key-type", "rsa-3072").rc == 0
    out = tmp_path / "out"
    out.mkdir()
    rng = random.Random(23)
    settled = 0
    for i in range(14):
        # rsa-3072: key generation and signing take long enough for kills to land in every phase
        p = subprocess.Popen([sys.executable, "-m", "sifguard", "ca", "issue", "--ca", str(ca_dir), "--cn", f"k{i}",
                              "--key-type", "rsa-3072", "--out-key", str(out / f"k{i}.key"),
                              "--out", str(out / f"k{i}.pem")],
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if i % 2:
            time.sleep(rng.uniform(0.15, 1.6))          # any instant
        else:
            _wait_for_pending(ca_dir, p)                 # right after the commit, files being written
        _kill_group(p)
        p.wait()
        # the next command settles what the killed one left
        nxt = run_cli("ca", "crl", "--ca", ca_dir, "--out", tmp_path / "crl.pem")
        assert nxt.rc == 0, nxt
        settled += nxt.err.count("interrupted issuance settled")
        check_consistent(ca_dir, out)
    # and the CRL published after settling lists what was revoked for lost keys
    crl = x509.load_pem_x509_crl((tmp_path / "crl.pem").read_bytes())
    lost = {r.serial for r in CAStore(str(ca_dir)).rows() if r.reason == "cessationOfOperation"}
    assert lost <= {f"{c.serial_number:X}" for c in crl}
    print(f"settled {settled} interrupted issuances, {len(lost)} revoked for lost keys, "
          f"{len(list(out.glob('*.key')))} complete")


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_recover_completes_or_revokes(tmp_path):
    ca_dir = tmp_path / "ca"
    assert run_cli("ca", "init", "--ca", ca_dir, "--name", "Rec").rc == 0
    s = CAStore(str(ca_dir))
    from sifguard.ca import profiles, store as castore
    outcomes = {}
    for case in ("key-written", "key-missing", "key-other", "csr"):
        key = profiles.generate_key("ec-p256")
        out, out_key = tmp_path / f"{case}.pem", tmp_path / f"{case}.key"
        c = s.issue(key.public_key(), case, None, 30, out=str(out), out_key=None if case == "csr" else str(out_key))
        out.write_bytes(castore.pem(c) + castore.pem(s.intermediate))
        if case == "key-written":
            files.create(str(out_key), castore.key_bytes(key, None))
        elif case == "key-other":
            files.create(str(out_key), castore.key_bytes(profiles.generate_key("ec-p256"), None))
        outcomes[case] = f"{c.serial_number:X}"
    # a temporary of the dead process beside the output
    (tmp_path / f".key-missing.key{files.TMP_MARK}{_dead_pid()}.ab12").write_bytes(b"half a key")
    s.db.execute("UPDATE pending_issuance SET pid=?", (_dead_pid(),))
    notes = s.recover()
    assert len(notes) == 2 and all("revoked" in n for n in notes), notes
    st = {k: s.get(v) for k, v in outcomes.items()}
    assert st["key-written"].status == "valid" and st["csr"].status == "valid"
    assert st["key-missing"].status == "revoked" and st["key-missing"].reason == "cessationOfOperation"
    assert st["key-other"].status == "revoked"
    assert not (tmp_path / "key-missing.pem").exists()          # the certificate for the lost key is gone
    assert (tmp_path / "key-written.pem").exists() and (tmp_path / "csr.pem").exists()
    assert not _leftovers(tmp_path)
    assert s.db.execute("SELECT COUNT(*) FROM pending_issuance").fetchone()[0] == 0
    # a pending row of a live process is left alone
    c = s.issue(profiles.generate_key("ec-p256").public_key(), "live", None, 30, out=str(tmp_path / "l.pem"),
                out_key=str(tmp_path / "l.key"))
    assert s.recover() == [] and s.get(f"{c.serial_number:X}").status == "valid"


def test_files_create_replace_sweep(tmp_path):
    old = os.umask(0)
    try:
        files.create(str(tmp_path / "k"), b"secret")
        files.replace(str(tmp_path / "p"), b"public", 0o644)
        files.replace(str(tmp_path / "s"), b"secret", 0o600)
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "k").st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "s").st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "p").st_mode & 0o777 == 0o644
    with pytest.raises(BadInputError, match="exists"):
        files.create(str(tmp_path / "k"), b"other")
    assert (tmp_path / "k").read_bytes() == b"secret"
    dead, live = _dead_pid(), os.getpid()
    for n in (f".x{files.TMP_MARK}{dead}.00ff", f"y.tmp-{dead}", f".z{files.TMP_MARK}{live}.00ff",
              f".ca.db{files.TMP_MARK}{dead}.abcd-wal", "unrelated.tmp", f".x{files.TMP_MARK}{dead}.notHEX"):
        (tmp_path / n).write_bytes(b"")
    removed = {os.path.basename(p) for p in files.sweep(str(tmp_path))}
    assert removed == {f".x{files.TMP_MARK}{dead}.00ff", f"y.tmp-{dead}", f".ca.db{files.TMP_MARK}{dead}.abcd-wal"}
    # with a stem, only that file's temporaries
    (tmp_path / f".a{files.TMP_MARK}{dead}.01").write_bytes(b"")
    (tmp_path / f".b{files.TMP_MARK}{dead}.01").write_bytes(b"")
    assert [os.path.basename(p) for p in files.sweep(str(tmp_path), "a")] == [f".a{files.TMP_MARK}{dead}.01"]


def test_keys_0600_under_permissive_umask(tmp_path):
    r = subprocess.run(["sh", "-c", f"umask 000 && {sys.executable} -m sifguard ca init --ca {tmp_path}/ca --name U "
                        f"&& {sys.executable} -m sifguard ca issue --ca {tmp_path}/ca --cn u --out-key {tmp_path}/u.key "
                        f"--out {tmp_path}/u.pem"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for k in ("ca/root.key", "ca/intermediate.key", "ca/ocsp-responder.key", "u.key", "ca/ca.db", "ca/ca.json"):
        assert os.stat(tmp_path / k).st_mode & 0o777 == 0o600, k
    assert os.stat(tmp_path / "ca").st_mode & 0o777 == 0o700
