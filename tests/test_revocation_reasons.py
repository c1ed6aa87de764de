"""Revocation by reason, with times: what `sifguard ca` records and publishes (CRL entries with
CRLReason and invalidityDate, ExpiredCertsOnCRL; OCSP answers with archiveCutoff and
invalidityDate singleExtensions) and what the revocation client reads back into `Status`
(revoked_at, revocation_reason, invalidity_date) from every path: OCSP, cached OCSP (fresh
and stale), CRL, cached CRL (fresh and stale). `openssl ocsp` / `openssl crl` are the
independent readers, `openssl ocsp -index` the independent responder that keeps no archive.

Expired certificates: a `good` / *not listed* is evidence only with archiveCutoff /
ExpiredCertsOnCRL at or before the certificate's notAfter; a revocation stays one.
"""
import datetime as dt
import json
import re
import shutil
import sqlite3
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from conftest import OpensslOcsp, Server, free_port, ocsp_probe, run_cli, split_pem
from sifguard.ca import ocsp_response as oc
from sifguard.ca import store as castore
from sifguard.ca.names import REASON_NAMES
from sifguard.ocsp.client import Checker
from sifguard.policy.model import Revocation, Responder

UTC = dt.timezone.utc
CODES = {"unspecified": 0, "keyCompromise": 1, "cACompromise": 2, "affiliationChanged": 3, "superseded": 4,
         "cessationOfOperation": 5, "certificateHold": 6, "privilegeWithdrawn": 9, "aACompromise": 10}
OPENSSL_CRL_NAMES = {"keyCompromise": "Key Compromise", "cACompromise": "CA Compromise",
                     "affiliationChanged": "Affiliation Changed", "superseded": "Superseded",
                     "cessationOfOperation": "Cessation Of Operation", "certificateHold": "Certificate Hold",
                     "privilegeWithdrawn": "Privilege Withdrawn", "aACompromise": "AA Compromise"}
DEAD = "http://127.0.0.1:9/"        # discard port: nothing answers


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC).replace(microsecond=0)


def openssl_time(text: str) -> dt.datetime:
    """'Nov 30 09:00:00 2026 GMT' (openssl pads the day with a space) as an aware datetime."""
    return dt.datetime.strptime(" ".join(text.split()), "%b %d %H:%M:%S %Y GMT").replace(tzinfo=UTC)


def checker(tmp_path, now=None, **kw):
    kw.setdefault("cache_dir", str(tmp_path / f"cache-{time.monotonic_ns()}"))
    kw.setdefault("timeout", 5)
    return Checker(Revocation(**kw), now=now)


def invalidity_forms(i: int, base: dt.datetime) -> tuple[str, dt.datetime]:
    """The ways an operator writes a date (cycled): what to pass, and the instant it means."""
    forms = [
        (f"{base:%Y-%m-%d}", base.replace(hour=0, minute=0, second=0)),
        (f"{base:%Y-%m-%dT%H:%M:%S}Z", base),
        (f"{base + dt.timedelta(hours=2):%Y-%m-%dT%H:%M:%S}+02:00", base),
        (f"{base:%Y-%m-%dT%H:%M:%S}", base),
        (f"{base - dt.timedelta(hours=5, minutes=30):%Y-%m-%d %H:%M}-05:30", base.replace(second=0)),
    ]
    return forms[i % len(forms)]


# --- one CA, one revoked certificate per reason, with and without an invalidity date ----
@pytest.fixture(scope="module")
def site(tmp_path_factory):
    d = tmp_path_factory.mktemp("reasons")
    port = free_port()
    ca = d / "ca"
    assert run_cli("ca", "init", "--ca", ca, "--name", "Reason Site", "--url", f"http://127.0.0.1:{port}",
                   "--ocsp-validity-hours", "1").rc == 0
    base = utcnow() - dt.timedelta(days=3, hours=1, minutes=17)
    out = {"d": d, "ca": ca, "port": port, "certs": {}, "want": {}}
    for i, reason in enumerate(REASON_NAMES):
        for with_inv in (False, True):
            name = f"{reason}-{'inv' if with_inv else 'plain'}"
            assert run_cli("ca", "issue", "--ca", ca, "--cn", name, "--out-key", d / f"{name}.key",
                           "--out", d / f"{name}.pem").rc == 0
            args = ["ca", "revoke", "--ca", ca, "--cert", d / f"{name}.pem", "--reason", reason]
            inv = None
            if with_inv:
                text, inv = invalidity_forms(i, base + dt.timedelta(minutes=i))
                args += ["--invalidity-date", text]
            r = run_cli(*args)
            assert r.rc == 0, r
            leaf, inter = split_pem(d / f"{name}.pem")
            out["certs"][name] = x509.load_pem_x509_certificate(leaf.encode())
            (d / f"{name}.leaf.pem").write_text(leaf)
            out["want"][name] = inv
    (d / "issuer.pem").write_text(inter)
    out["issuer"] = x509.load_pem_x509_certificate(inter.encode())
    listing = json.loads(run_cli("ca", "list", "--ca", ca, "--json").out)["certificates"]
    out["rows"] = {r["serial"]: r for r in listing}
    out["created"] = dt.datetime.fromtimestamp(json.load(open(ca / "ca.json"))["created"], UTC)
    srv = Server(ca, port=port)
    out["url"] = srv.url + "/"
    yield out
    srv.stop()


def _case(site, reason, with_inv):
    name = f"{reason}-{'inv' if with_inv else 'plain'}"
    cert = site["certs"][name]
    row = site["rows"][f"{cert.serial_number:X}"]
    revoked_at = dt.datetime.strptime(row["revoked_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return name, cert, row, revoked_at, site["want"][name]


def _assert_facts(st, reason, revoked_at, inv):
    assert st.status == "revoked", st
    assert st.revoked_at == revoked_at.timestamp(), st
    assert st.revocation_reason == (None if reason == "unspecified" else reason), st
    assert st.invalidity_date == (inv.timestamp() if inv else None), st
    d = st.as_dict()
    assert d["revoked_at"] == f"{revoked_at:%Y-%m-%dT%H:%M:%SZ}"
    assert d.get("revocation_reason") == st.revocation_reason
    assert d.get("invalidity_date") == (f"{inv:%Y-%m-%dT%H:%M:%SZ}" if inv else None)
    assert st.reason      # the human text stays


ALL = [(r, w) for r in REASON_NAMES for w in (False, True)]


def test_ca_list_shows_invalidity(site):
    for name, inv in site["want"].items():
        row = site["rows"][f"{site['certs'][name].serial_number:X}"]
        assert row["status"] == "revoked" and row["reason"] == name.rsplit("-", 1)[0]
        assert row["invalidity_date"] == (f"{inv:%Y-%m-%dT%H:%M:%SZ}" if inv else None)


@pytest.mark.parametrize("reason,with_inv", ALL)
@pytest.mark.parametrize("nonce", [False, True])
def test_ocsp_fresh_cached_and_stale(site, tmp_path, reason, with_inv, nonce):
    name, cert, _, revoked_at, inv = _case(site, reason, with_inv)
    c = checker(tmp_path, crl_fallback=False, nonce=nonce)
    st = c.check(cert, site["issuer"])
    assert st.source == "ocsp"
    _assert_facts(st, reason, revoked_at, inv)
    cached = checker(tmp_path, cache_dir=c.cfg.cache_dir, crl_fallback=False, responders=(Responder("*", DEAD),))
    st = cached.check(cert, site["issuer"])
    assert st.source == "cache (ocsp)"
    _assert_facts(st, reason, revoked_at, inv)
    # past nextUpdate (validity 1 h) with the responder gone: a revocation stays one, a hold does not
    later = lambda: dt.datetime.now(UTC) + dt.timedelta(hours=3)  # noqa: E731
    stale = checker(tmp_path, now=later, cache_dir=c.cfg.cache_dir, crl_fallback=False,
                    responders=(Responder("*", DEAD),), timeout=1)
    st = stale.check(cert, site["issuer"])
    if reason == "certificateHold":
        assert st.status == "error" and st.revoked_at is None, st
    else:
        assert st.source == "cache (ocsp, stale)"
        _assert_facts(st, reason, revoked_at, inv)


@pytest.mark.parametrize("reason,with_inv", ALL)
def test_crl_fresh_cached_and_stale(site, tmp_path, reason, with_inv):
    name, cert, _, revoked_at, inv = _case(site, reason, with_inv)
    dead = (Responder("*", DEAD),)
    c = checker(tmp_path, responders=dead)
    st = c.check(cert, site["issuer"])
    assert st.source == "crl"
    _assert_facts(st, reason, revoked_at, inv)
    st = checker(tmp_path, cache_dir=c.cfg.cache_dir, responders=dead).check(cert, site["issuer"])
    assert st.source == "cache (crl)"
    _assert_facts(st, reason, revoked_at, inv)
    later = lambda: dt.datetime.now(UTC) + dt.timedelta(days=2)  # noqa: E731  (the CRL is good for 24 h)
    stale = checker(tmp_path, now=later, cache_dir=c.cfg.cache_dir, responders=dead, crl_fallback=False, timeout=1)
    st = stale.check(cert, site["issuer"])
    if reason == "certificateHold":
        assert st.status == "error" and st.revoked_at is None, st
    else:
        assert st.source == "cache (crl, stale)"
        _assert_facts(st, reason, revoked_at, inv)


@pytest.mark.parametrize("reason,with_inv", ALL)
def test_openssl_reads_the_ocsp_answer(site, tmp_path, reason, with_inv):
    """openssl as the client: verifies the answer and prints reason code, invalidity date and
    archive cutoff as the CA recorded them."""
    name, cert, _, revoked_at, inv = _case(site, reason, with_inv)
    d = site["d"]
    p = subprocess.run(["openssl", "ocsp", "-issuer", d / "issuer.pem", "-cert", d / f"{name}.leaf.pem",
                        "-url", site["url"], "-CAfile", site["ca"] / "root.pem", "-verify_other", d / "issuer.pem",
                        "-resp_text", "-no_nonce"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "Response verify OK" in p.stderr, p.stderr
    text = p.stdout
    assert re.search(r"Cert Status: revoked", text)
    assert openssl_time(re.search(r"Revocation Time: (.+)", text).group(1)) == revoked_at
    m = re.search(r"Revocation Reason: .*\(0x([0-9a-f]+)\)", text)
    if reason == "unspecified":
        assert m is None, text          # RFC 5280: the unspecified code is left out
    else:
        assert m and int(m.group(1), 16) == CODES[reason], text
    cutoff = re.search(r"OCSP Archive Cutoff:\s*\n\s*(.+)", text)
    assert cutoff and openssl_time(cutoff.group(1)) == site["created"], text
    m = re.search(r"Invalidity Date:\s*\n\s*(.+)", text)
    assert (openssl_time(m.group(1)) if m else None) == inv, text


def _crl_text(path) -> str:
    p = subprocess.run(["openssl", "crl", "-in", path, "-inform", "DER", "-text", "-noout"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout


def _crl_entries(text: str) -> dict[str, str]:
    """serial (upper hex) -> that entry's text, from `openssl crl -text`."""
    body = text.split("Revoked Certificates:", 1)[1].split("Signature Algorithm", 1)[0]
    return {m.group(1).lstrip("0"): m.group(2) for m in re.finditer(r"Serial Number: ([0-9A-F]+)\n(.*?)(?=Serial Number:|\Z)",
                                                        body, re.S)}


def _expired_certs_on_crl(text: str) -> dt.datetime | None:
    """openssl 3.0 prints 2.5.29.60 as an unknown extension (its DER: '..YYYYMMDDHHMMSSZ');
    later versions may name it."""
    m = re.search(r"(?:2\.5\.29\.60|Expired Certs On CRL):\s*\n\s*(.+)", text)
    if m is None:
        return None
    digits = re.search(r"(\d{14})Z", m.group(1))
    if digits:
        return dt.datetime.strptime(digits.group(1), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    return openssl_time(m.group(1))


@pytest.mark.parametrize("reason,with_inv", ALL)
def test_openssl_reads_the_crl_entry(site, reason, with_inv):
    name, cert, _, revoked_at, inv = _case(site, reason, with_inv)
    text = _crl_text(site["ca"] / "crl.der")
    assert _expired_certs_on_crl(text) == site["created"], text
    entry = _crl_entries(text)[f"{cert.serial_number:X}"]
    assert openssl_time(re.search(r"Revocation Date: (.+)", entry).group(1)) == revoked_at
    m = re.search(r"X509v3 CRL Reason Code:\s*\n\s*(.+)", entry)
    if reason == "unspecified":
        assert m is None, entry
    else:
        assert m and m.group(1).strip() == OPENSSL_CRL_NAMES[reason], entry
    m = re.search(r"Invalidity Date:\s*\n\s*(.+)", entry)
    assert (openssl_time(m.group(1)) if m else None) == inv, entry


def test_root_crl_carries_expired_certs_on_crl(site):
    text = _crl_text(site["ca"] / "root-crl.der")
    assert _expired_certs_on_crl(text) == site["created"]


# --- expired certificates -------------------------------------------------------------
LATER = dt.timedelta(days=2)          # the checkers of this part live two days ahead


def later():
    return dt.datetime.now(UTC) + LATER


def _key(ca, name):
    return serialization.load_pem_private_key(open(ca / name, "rb").read(), None)


def _leaf(ca_dir, cn, not_after, crl_url, ocsp_url=None):
    """A code-signing certificate made with cryptography's builders under the test CA's
    intermediate and recorded in its database (so its responder answers for it)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    s = castore.CAStore(str(ca_dir))
    inter, ikey = s.intermediate, _key(ca_dir, "intermediate.key")
    key = ec.generate_private_key(ec.SECP256R1())
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
         .issuer_name(inter.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(not_after - dt.timedelta(days=30)).not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
         .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
             [x509.UniformResourceIdentifier(crl_url)], None, None, None)]), critical=False))
    if ocsp_url:
        b = b.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
    cert = b.sign(ikey, hashes.SHA256())
    with s.db:
        s._insert(cert, "code-signing", castore.utcnow())
    s.db.close()
    return cert


def _crl(ca_dir, revoked=(), expired_certs_on=None):
    """A CRL of the test CA's intermediate made with cryptography's builder, current for
    three days, with ExpiredCertsOnCRL only when asked."""
    from sifguard.ca.profiles import EXPIRED_CERTS_ON_CRL, generalized_time
    inter = x509.load_pem_x509_certificate(open(ca_dir / "intermediate.pem", "rb").read())
    now = utcnow()
    b = (x509.CertificateRevocationListBuilder().issuer_name(inter.subject).last_update(now)
         .next_update(now + dt.timedelta(days=3)).add_extension(x509.CRLNumber(1), critical=False))
    if expired_certs_on is not None:
        b = b.add_extension(x509.UnrecognizedExtension(EXPIRED_CERTS_ON_CRL, generalized_time(expired_certs_on)),
                            critical=False)
    for serial in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                      .revocation_date(now).build())
    return b.sign(_key(ca_dir, "intermediate.key"), hashes.SHA256()).public_bytes(serialization.Encoding.DER)


from test_revocation import Canned   # noqa: E402 - the hostile-responder helper of the revocation tests


EXPIRED_KINDS = ("ours", "no-crl", "crl-plain", "crl-late", "crl-exact", "crl-ca", "cutoff-late", "cutoff-exact",
                 "cache-good", "revoked-openssl", "revoked-ours")


@pytest.fixture(scope="module")
def old(tmp_path_factory):
    """A CA whose OCSP answers and CRLs stay current for three days; one certificate per case,
    each expiring one day after the CA was created (so the CA's archiveCutoff and
    ExpiredCertsOnCRL cover it), checked two days ahead: expired by then."""
    d = tmp_path_factory.mktemp("expired")
    port = free_port()
    ca = d / "ca"
    assert run_cli("ca", "init", "--ca", ca, "--name", "Old Site", "--url", f"http://127.0.0.1:{port}",
                   "--ocsp-validity-hours", "72", "--crl-hours", "72").rc == 0
    created = dt.datetime.fromtimestamp(json.load(open(ca / "ca.json"))["created"], UTC)
    not_after = created + dt.timedelta(days=1)
    out = {"d": d, "ca": ca, "created": created, "not_after": not_after, "certs": {}}
    for kind in EXPIRED_KINDS:
        crl_url = (d / f"crl-{kind}.der").as_uri() if kind != "revoked-ours" else f"http://127.0.0.1:{port}/crl.der"
        out["certs"][kind] = _leaf(ca, kind, not_after, crl_url, f"http://127.0.0.1:{port}/")
    out["issuer"] = x509.load_pem_x509_certificate(open(ca / "intermediate.pem", "rb").read())
    rev = out["certs"]["revoked-ours"]
    r = run_cli("ca", "revoke", "--ca", ca, "--serial", f"{rev.serial_number:X}", "--reason", "superseded",
                "--invalidity-date", f"{created:%Y-%m-%dT%H:%M:%S}Z")
    assert r.rc == 0, r
    # openssl's responder keeps no archive: every case listed as valid, one as revoked
    lines = []
    for kind, c in out["certs"].items():
        exp = c.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
        st, when = ("R", f"{created:%y%m%d%H%M%SZ},keyCompromise") if kind == "revoked-openssl" else ("V", "")
        lines.append(f"{st}\t{exp}\t{when}\t{c.serial_number:X}\tunknown\t/CN={kind}\n")
    (d / "index.txt").write_text("".join(lines))
    ossl = OpensslOcsp(d / "index.txt", ca / "ocsp-responder.pem", ca / "ocsp-responder.key",
                       ca / "intermediate.pem", ocsp_probe(out["certs"]["ours"], out["issuer"]), "-ndays", "3")
    srv = None
    try:
        srv = Server(ca, port=port)
        out["openssl"] = ossl.url
        yield out
    finally:
        if srv is not None:
            srv.stop()
        ossl.stop()


def _expired_checker(tmp_path, responder=None, **kw):
    kw.setdefault("max_age", 7 * 86400)
    if responder:
        kw["responders"] = (Responder("*", responder),)
    return checker(tmp_path, now=later, **kw)


def test_expired_good_from_our_responder(old, tmp_path):
    cert = old["certs"]["ours"]
    c = _expired_checker(tmp_path, crl_fallback=False)
    st = c.check(cert, old["issuer"])
    assert (st.status, st.source) == ("good", "ocsp"), st
    st = _expired_checker(tmp_path, DEAD, cache_dir=c.cfg.cache_dir, crl_fallback=False).check(cert, old["issuer"])
    assert (st.status, st.source) == ("good", "cache (ocsp)"), st


@pytest.mark.parametrize("kind", ["ours", "revoked-ours"])
def test_static_export_answers_for_expired_certificates(old, tmp_path, kind):
    """`ca export-ocsp` run after a certificate expired still publishes its answer, with the
    archiveCutoff that keeps a `good` meaningful; served as nginx maps GETs (request path =
    base64 of the request), our client accepts it about the expired certificate."""
    from sifguard.ocsp.export import export, request_path
    cert, out = old["certs"][kind], tmp_path / "www"
    export(castore.CAStore(str(old["ca"])), str(out), now=later())
    listed = [r for r in json.load(open(out / "manifest.json"))["responses"] if int(r["serial"], 16) == cert.serial_number]
    assert {r["hash"] for r in listed} == {"sha1", "sha256"}, listed
    assert {r["certificate"] for r in listed} == ({"expired"} if kind == "ours" else {"revoked"}), listed
    resp = ocsp.load_der_ocsp_response((out / "by-serial" / f"{cert.serial_number:X}.sha256.der").read_bytes())
    assert resp.certificate_status == (ocsp.OCSPCertStatus.GOOD if kind == "ours" else ocsp.OCSPCertStatus.REVOKED)
    assert bytes.fromhex("06092b0601050507300106") in resp.public_bytes(serialization.Encoding.DER)  # archiveCutoff
    static = Canned(lambda req: (out / request_path(req)).read_bytes())
    try:
        st = _expired_checker(tmp_path, static.url, crl_fallback=False).check(cert, old["issuer"])
    finally:
        static.stop()
    want = ("good", "ocsp") if kind == "ours" else ("revoked", "ocsp")
    assert (st.status, st.source) == want, st
    if kind == "revoked-ours":
        assert st.revocation_reason == "superseded" and st.invalidity_date is not None, st


@pytest.mark.parametrize("kind,crl,want", [
    ("no-crl", None, None),
    ("crl-plain", "plain", None),
    ("crl-late", "late", None),
    ("crl-exact", "exact", "good"),
    ("crl-ca", "ca", "good"),
])
def test_expired_good_without_archive_cutoff_falls_to_the_crl(old, tmp_path, kind, crl, want):
    """openssl's responder says good without archiveCutoff: only a CRL that keeps expired
    certificates since no later than the notAfter can vouch."""
    cert, ca = old["certs"][kind], old["ca"]
    path = old["d"] / f"crl-{kind}.der"
    if crl == "ca":
        assert run_cli("ca", "crl", "--ca", ca).rc == 0
        shutil.copyfile(ca / "crl.der", path)
    elif crl is not None:
        since = {"plain": None, "late": old["not_after"] + dt.timedelta(seconds=1), "exact": old["not_after"]}[crl]
        path.write_bytes(_crl(ca, expired_certs_on=since))
    c = _expired_checker(tmp_path, old["openssl"])
    st = c.check(cert, old["issuer"])
    if want is None:
        assert st.status == "error", st
        assert "archiveCutoff" in st.reason and "expired" in st.reason and st.revoked_at is None, st
        if crl is not None:
            assert "ExpiredCertsOnCRL" in st.reason, st
        return
    assert (st.status, st.source) == ("good", "crl"), st
    # the same CRL from the cache, the responder gone
    st = _expired_checker(tmp_path, DEAD, cache_dir=c.cfg.cache_dir).check(cert, old["issuer"])
    assert (st.status, st.source) == ("good", "cache (crl)"), st


def test_expired_cached_crl_without_expired_certs_on_crl_proves_nothing(old, tmp_path):
    cert = old["certs"]["crl-plain"]
    (old["d"] / "crl-crl-plain.der").write_bytes(_crl(old["ca"]))
    c = _expired_checker(tmp_path, DEAD)
    st = c.check(cert, old["issuer"])
    assert st.status == "error" and "ExpiredCertsOnCRL" in st.reason, st
    # it was cached (authentic and current): still no evidence from the cache
    st = _expired_checker(tmp_path, DEAD, cache_dir=c.cfg.cache_dir).check(cert, old["issuer"])
    assert st.status == "error" and "ExpiredCertsOnCRL" in st.reason, st
    # the same certificate checked today (not expired): the CRL vouches
    st = checker(tmp_path, responders=(Responder("*", DEAD),)).check(cert, old["issuer"])
    assert (st.status, st.source) == ("good", "crl"), st


@pytest.mark.parametrize("kind,shift,want", [("cutoff-late", dt.timedelta(hours=1), "error"),
                                             ("cutoff-exact", dt.timedelta(0), "good")])
def test_archive_cutoff_must_reach_back_to_not_after(old, tmp_path, kind, shift, want):
    """A responder (our Signer, as a third party would run it) whose archive starts after the
    certificate expired is no evidence for it; one that starts exactly at its notAfter is."""
    cert, ca = old["certs"][kind], old["ca"]
    s = castore.CAStore(str(ca))
    signer = oc.Signer(s.intermediate, s.key(castore.OCSP_KEY), s.responder, dt.timedelta(days=3),
                       old["not_after"] + shift)
    srv = Canned(lambda req: signer.answer(oc.parse_request(req), lambda _s: ("valid", None, None, None),
                                           dt.datetime.now(UTC)).der)
    try:
        (old["d"] / f"crl-{kind}.der").write_bytes(_crl(ca))      # a CRL that cannot help either
        st = _expired_checker(tmp_path, srv.url).check(cert, old["issuer"])
    finally:
        srv.stop()
        s.db.close()
    if want == "good":
        assert (st.status, st.source) == ("good", "ocsp"), st
    else:
        assert st.status == "error" and "archiveCutoff" in st.reason and "ExpiredCertsOnCRL" in st.reason, st


def test_expired_cached_good_without_archive_cutoff_is_not_used(old, tmp_path):
    """A good fetched while the certificate was valid, still current after it expired,
    carries no archiveCutoff: after expiry it proves nothing."""
    cert = old["certs"]["cache-good"]
    c = checker(tmp_path, responders=(Responder("*", old["openssl"]),), crl_fallback=False, max_age=7 * 86400)
    assert c.check(cert, old["issuer"]).status == "good"
    st = _expired_checker(tmp_path, DEAD, cache_dir=c.cfg.cache_dir, crl_fallback=False).check(cert, old["issuer"])
    assert st.status == "error" and st.source == "none", st


def test_expired_revoked_stays_revoked(old, tmp_path):
    # openssl's responder (no archiveCutoff): a revocation needs none
    cert = old["certs"]["revoked-openssl"]
    st = _expired_checker(tmp_path, old["openssl"], crl_fallback=False).check(cert, old["issuer"])
    assert (st.status, st.source, st.revocation_reason) == ("revoked", "ocsp", "keyCompromise"), st
    assert st.revoked_at == old["created"].timestamp() and st.invalidity_date is None
    # ours, OCSP then CRL (the CRL from `ca serve`)
    cert = old["certs"]["revoked-ours"]
    for kw in ({"crl_fallback": False}, {"responders": (Responder("*", DEAD),)}):
        st = _expired_checker(tmp_path, **kw).check(cert, old["issuer"])
        assert st.status == "revoked" and st.revocation_reason == "superseded", st
        assert st.invalidity_date == old["created"].timestamp(), st


def test_expired_revoked_certificates_stay_on_the_crl(tmp_path):
    """A certificate that expired long ago, revoked, stays listed on every later CRL."""
    ca = tmp_path / "ca"
    assert run_cli("ca", "init", "--ca", ca, "--name", "Keep Site", "--url", "http://127.0.0.1:9").rc == 0
    gone = _leaf(ca, "long-gone", utcnow() - dt.timedelta(days=400), "http://127.0.0.1:9/crl.der")
    serial = f"{gone.serial_number:X}"
    assert run_cli("ca", "revoke", "--ca", ca, "--serial", serial, "--reason", "keyCompromise",
                   "--invalidity-date", f"{utcnow() - dt.timedelta(days=500):%Y-%m-%d}").rc == 0
    for _ in range(2):
        assert run_cli("ca", "crl", "--ca", ca).rc == 0
        text = _crl_text(ca / "crl.der")
        entry = _crl_entries(text)[serial]
        assert "Key Compromise" in entry and "Invalidity Date" in entry
        assert _expired_certs_on_crl(text) is not None


# --- `ca revoke --invalidity-date`: bad values ------------------------------------------
@pytest.fixture
def fresh_ca(tmp_path):
    ca = tmp_path / "ca"
    assert run_cli("ca", "init", "--ca", ca, "--name", "Bad Input Site", "--url", "http://127.0.0.1:9").rc == 0
    assert run_cli("ca", "issue", "--ca", ca, "--cn", "victim", "--out-key", tmp_path / "v.key",
                   "--out", tmp_path / "v.pem").rc == 0
    return ca, tmp_path / "v.pem"


def _state(ca):
    db = sqlite3.connect(ca / "ca.db")
    try:
        rows = db.execute("SELECT serial, status, revoked_at, reason, invalidity_date FROM certificates "
                          "ORDER BY serial").fetchall()
        crls = db.execute("SELECT COUNT(*) FROM crls").fetchone()
    finally:
        db.close()
    return rows, crls, (ca / "crl.der").read_bytes()


@pytest.mark.parametrize("value,msg", [
    (lambda: f"{utcnow() + dt.timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}", "in the future"),
    (lambda: f"{utcnow() + dt.timedelta(days=400):%Y-%m-%d}", "in the future"),
    (lambda: f"{utcnow() + dt.timedelta(minutes=2):%Y-%m-%dT%H:%M:%S}+00:00", "after the revocation time"),
    (lambda: f"{utcnow() + dt.timedelta(hours=1, minutes=2):%Y-%m-%dT%H:%M:%S}+01:00", "after the revocation"),
    (lambda: "garbage", "ISO-8601"),
    (lambda: "", "empty"),
    (lambda: "2026-13-01", "not a valid date"),
    (lambda: "2026-02-30T10:00:00Z", "not a valid date"),
    (lambda: "2026-W05", "ISO-8601"),
    (lambda: "１９９９-01-01", "ISO-8601"),
    (lambda: "1999-01-01T25:00:00", "not a valid date"),
    (lambda: "0001-01-01T00:00:00+01:00", "out of range"),
    (lambda: "2020-01-01T00:00:00+24:00", "not a valid date"),
    (lambda: "2020-01-01; DROP TABLE certificates", "ISO-8601"),
])
def test_revoke_bad_invalidity_date(fresh_ca, value, msg):
    ca, cert = fresh_ca
    before = _state(ca)
    r = run_cli("ca", "revoke", "--ca", ca, "--cert", cert, "--reason", "keyCompromise", "--invalidity-date", value())
    assert r.rc == 2 and len(r.err.strip().splitlines()) == 1 and msg in r.err and "--invalidity-date" in r.err, r
    assert _state(ca) == before


def test_revoke_invalidity_date_is_kept_and_shown(fresh_ca):
    ca, cert = fresh_ca
    when = utcnow() - dt.timedelta(days=10)
    r = run_cli("ca", "revoke", "--ca", ca, "--cert", cert, "--reason", "privilegeWithdrawn",
                "--invalidity-date", f"{when + dt.timedelta(hours=-3):%Y-%m-%dT%H:%M:%S}-03:00")
    assert r.rc == 0 and f"invalid since {when:%Y-%m-%dT%H:%M:%SZ}" in r.out, r
    rows = json.loads(run_cli("ca", "list", "--ca", ca, "--json", "--status", "revoked").out)["certificates"]
    assert [(x["reason"], x["invalidity_date"]) for x in rows] == [("privilegeWithdrawn", f"{when:%Y-%m-%dT%H:%M:%SZ}")]


def test_database_of_an_older_ca_is_migrated(fresh_ca, tmp_path):
    """A CA database from before invalidity dates (schema 3) gains the column on first use."""
    ca, cert = fresh_ca
    db = sqlite3.connect(ca / "ca.db")
    db.execute("ALTER TABLE certificates DROP COLUMN invalidity_date")
    db.execute("PRAGMA user_version=3")
    db.commit()
    db.close()
    r = run_cli("ca", "revoke", "--ca", ca, "--cert", cert, "--reason", "keyCompromise",
                "--invalidity-date", f"{utcnow() - dt.timedelta(days=1):%Y-%m-%d}")
    assert r.rc == 0, r
    db = sqlite3.connect(ca / "ca.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(castore.MIGRATIONS)
    assert db.execute("SELECT COUNT(*) FROM certificates WHERE invalidity_date IS NOT NULL").fetchone()[0] == 1
    db.close()


def test_presigned_answer_follows_the_record(tmp_path):
    """The responder's pre-signed (nonce-less) answer changes when the invalidity date does
    not exist yet / does: the cached record is the whole status, invalidity date included."""
    port = free_port()
    ca = tmp_path / "ca"
    assert run_cli("ca", "init", "--ca", ca, "--name", "Presign Site", "--url", f"http://127.0.0.1:{port}").rc == 0
    assert run_cli("ca", "issue", "--ca", ca, "--cn", "p", "--out-key", tmp_path / "p.key",
                   "--out", tmp_path / "p.pem").rc == 0
    leaf = x509.load_pem_x509_certificate(split_pem(tmp_path / "p.pem")[0].encode())
    issuer = x509.load_pem_x509_certificate(open(ca / "intermediate.pem", "rb").read())
    srv = Server(ca, port=port)
    try:
        assert checker(tmp_path).check(leaf, issuer).status == "good"
        when = utcnow() - dt.timedelta(hours=5)
        assert run_cli("ca", "revoke", "--ca", ca, "--cert", tmp_path / "p.pem", "--reason", "cACompromise",
                       "--invalidity-date", f"{when:%Y-%m-%dT%H:%M:%SZ}").rc == 0
        st = checker(tmp_path, crl_fallback=False).check(leaf, issuer)
        assert (st.status, st.revocation_reason, st.invalidity_date) == ("revoked", "cACompromise", when.timestamp())
    finally:
        srv.stop()


def _asn1crypto_reference(q, status, revoked, this_update, next_update, produced_at, key_hash, cutoff,
                          sig_alg, signature, certs) -> bytes:
    """The same OCSPResponse built by asn1crypto from the same facts (the reference encoder)."""
    from asn1crypto import algos, core, ocsp as aocsp, x509 as ax509
    names = {"keyCompromise": "key_compromise", "cACompromise": "ca_compromise",
             "affiliationChanged": "affiliation_changed", "superseded": "superseded",
             "cessationOfOperation": "cessation_of_operation", "certificateHold": "certificate_hold",
             "privilegeWithdrawn": "privilege_withdrawn", "aACompromise": "aa_compromise"}
    if status == "revoked":
        info = {"revocation_time": revoked[0]}
        if revoked[1]:
            info["revocation_reason"] = names[revoked[1]]
        cert_status = aocsp.CertStatus(name="revoked", value=info)
    else:
        cert_status = aocsp.CertStatus(name=status, value=core.Null())
    exts = [{"extn_id": "archive_cutoff", "critical": False, "extn_value": core.GeneralizedTime(cutoff)}]
    if status == "revoked" and revoked[2] is not None:
        exts.append({"extn_id": "invalidity_date", "critical": False, "extn_value": core.GeneralizedTime(revoked[2])})
    single = {"cert_id": {"hash_algorithm": {"algorithm": q.alg, "parameters": core.Null()},
                          "issuer_name_hash": q.issuer_name_hash, "issuer_key_hash": q.issuer_key_hash,
                          "serial_number": q.serial},
              "cert_status": cert_status, "this_update": this_update, "next_update": next_update,
              "single_extensions": exts}
    data = {"responder_id": aocsp.ResponderId(name="by_key", value=key_hash), "produced_at": produced_at,
            "responses": [single]}
    if q.nonce is not None:
        data["response_extensions"] = [{"extn_id": "nonce", "critical": False, "extn_value": q.nonce}]
    if sig_alg["algorithm"].endswith("_rsa"):
        sig_alg = dict(sig_alg, parameters=core.Null())      # RFC 4055: NULL parameters for sha*WithRSA
    basic = {"tbs_response_data": aocsp.ResponseData(data), "signature_algorithm": algos.SignedDigestAlgorithm(sig_alg),
             "signature": signature}
    if certs:
        basic["certs"] = [ax509.Certificate.load(c) for c in certs]
    return aocsp.OCSPResponse({"response_status": "successful", "response_bytes": {
        "response_type": "basic_ocsp_response", "response": aocsp.BasicOCSPResponse(basic)}}).dump()


SIG_ALGS = {"ec-p256": {"algorithm": "sha256_ecdsa"}, "ec-p384": {"algorithm": "sha384_ecdsa"},
            "rsa-3072": {"algorithm": "sha256_rsa"}, "ed25519": {"algorithm": "ed25519"}}


@pytest.mark.parametrize("kt", ["ec-p256", "ec-p384", "rsa-3072", "ed25519"])
def test_ocsp_answer_encoding_matches_asn1crypto_and_parses(tmp_path, kt):
    """The answers `ca serve` signs are byte for byte what asn1crypto builds from the same
    facts, parse with cryptography and verify — for each CA key type, signed by the delegated
    responder or the issuer, every status, each CertID hash, with and without nonce."""
    from asn1crypto import core, ocsp as aocsp
    from sifguard.ocsp import answers as A
    s = castore.init(str(tmp_path / kt), "Key Site", "http://127.0.0.1:9", kt)
    now = utcnow()
    records = [("valid", None, None, None), None, ("revoked", 1700000000, "aACompromise", 1690000000),
               ("revoked", 1700000001, "unspecified", None), ("revoked", 1700000002, "keyCompromise", None)]
    for who, keyname in ((s.responder, castore.OCSP_KEY), (s.intermediate, castore.INT_KEY)):
        signer = oc.Signer(s.intermediate, s.key(keyname), who, dt.timedelta(hours=1), s.created)
        for alg, h in (("sha1", hashes.SHA1()), ("sha256", hashes.SHA256()), ("sha512", hashes.SHA512())):
            for nonce in (None, b"n" * 16, b"\xff" * 32):
                for rec in records:
                    b = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
                        *oc.issuer_hashes(s.intermediate, alg), 2 ** 158 + 4242, h)
                    if nonce:
                        b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
                    q = oc.parse_request(b.build().public_bytes(serialization.Encoding.DER))
                    a = signer.answer(q, lambda _s: rec, now)
                    r = ocsp.load_der_ocsp_response(a.der)
                    A.verify_signature(who.public_key(), r.signature, r.tbs_response_bytes,
                                       r.signature_hash_algorithm)
                    status = "unknown" if rec is None else ("good" if rec[0] == "valid" else "revoked")
                    revoked = None
                    if status == "revoked":
                        revoked = (dt.datetime.fromtimestamp(rec[1], UTC), rec[2] if rec[2] != "unspecified" else None,
                                   dt.datetime.fromtimestamp(rec[3], UTC) if rec[3] else None)
                    certs = [who.public_bytes(serialization.Encoding.DER)] if who is s.responder else []
                    ref = _asn1crypto_reference(q, status, revoked, a.this_update, a.next_update, now,
                                                x509.SubjectKeyIdentifier.from_public_key(who.public_key()).digest,
                                                s.created, SIG_ALGS[kt], r.signature, certs)
                    assert a.der == ref, (kt, alg, nonce, rec)
                    assert aocsp.OCSPResponse.load(a.der).dump(force=True) == a.der
                    assert [e.value.nonce for e in r.extensions] == ([nonce] if nonce else [])
                    exts = {e.oid.dotted_string: e.value for e in r.single_extensions}
                    assert core.GeneralizedTime.load(exts["1.3.6.1.5.5.7.48.1.6"].value).native == s.created
                    if status == "revoked":
                        assert r.revocation_time_utc.timestamp() == rec[1]
                        assert ("2.5.29.24" in exts) == bool(rec[3])
    s.db.close()


@pytest.mark.parametrize("n", [0, 1, 127, 128, 255, 256, 32767, 32768, 2 ** 64, 2 ** 159 - 1, 2 ** 159, 2 ** 160 - 1])
def test_der_integer_matches_asn1crypto(n):
    from asn1crypto import core
    from sifguard.ca import ocsp_der
    assert ocsp_der.integer(n) == core.Integer(n).dump()


@pytest.mark.parametrize("size", [0, 1, 127, 128, 255, 256, 65535, 65536, 1 << 20])
def test_der_lengths_match_asn1crypto(size):
    from asn1crypto import core
    from sifguard.ca import ocsp_der
    assert ocsp_der.octet_string(b"x" * size) == core.OctetString(b"x" * size).dump()


@pytest.mark.parametrize("dotted", ["1.3.6.1.5.5.7.48.1.6", "2.5.29.24", "2.16.840.1.101.3.4.2.3", "1.2.840.113549.1.1.11",
                                    "1.3.101.112", "2.999.1", "1.2.840.10045.4.3.2"])
def test_der_oid_matches_asn1crypto(dotted):
    from asn1crypto import core
    from sifguard.ca import ocsp_der
    assert ocsp_der.oid(dotted) == core.ObjectIdentifier(dotted).dump()


@pytest.mark.parametrize("when", [dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), dt.datetime(2050, 1, 1, tzinfo=UTC),
                                  dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=-7)))])
def test_der_generalized_time_matches_asn1crypto(when):
    from asn1crypto import core
    from sifguard.ca import ocsp_der, profiles
    assert ocsp_der.generalized_time(when) == core.GeneralizedTime(when.astimezone(UTC)).dump()
    assert profiles.generalized_time(when) == ocsp_der.generalized_time(when)


def test_presigned_answers_of_an_older_ca_are_signed_anew(fresh_ca):
    """A pre-signed answer stored before the upgrade (a 3-field record, no archiveCutoff) is
    not served again: the record differs, so the responder signs a new one."""
    from sifguard.ocsp.responder import make_app
    ca, cert_path = fresh_ca
    leaf = x509.load_pem_x509_certificate(split_pem(cert_path)[0].encode())
    app = make_app(str(ca))
    req = oc.minimal_request(leaf.serial_number, app.store.intermediate, "sha1")
    first = app.answer(req)
    assert app.answer(req).der == first.der                   # pre-signed: the same bytes again
    now = dt.datetime.now(UTC)
    old = (ocsp.OCSPResponseBuilder()
           .add_response(leaf, app.store.intermediate, hashes.SHA1(), ocsp.OCSPCertStatus.GOOD,
                         now, now + dt.timedelta(hours=4), None, None)
           .responder_id(ocsp.OCSPResponderEncoding.HASH, app.store.responder)
           .sign(app.store.key(castore.OCSP_KEY), hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    with app.store.db:
        app.store.db.execute("UPDATE ocsp_cache SET record=?, der=?, next_update=?",
                             (json.dumps(["valid", None, None]), old, int(now.timestamp()) + 4 * 3600))
    again = app.answer(req)
    assert again.der not in (old, first.der)
    exts = {e.oid.dotted_string for e in ocsp.load_der_ocsp_response(again.der).single_extensions}
    assert "1.3.6.1.5.5.7.48.1.6" in exts
    app.store.db.close()
