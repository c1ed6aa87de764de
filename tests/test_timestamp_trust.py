"""Which tokens count. Every class of bad token is made for real — by the TSA core
(sifguard.tsp.authority, the code behind `ca serve /tsa`) with a certificate of the wrong
profile, by `openssl ts -reply` with a TSA certificate outside its validity, or by editing a
valid token's bytes — and must be refused with its reason (and the signature then judged at
now). Tokens from `ca serve` are checked end to end (`sign --tsa`, `verify --policy`, and
`openssl ts -verify` on the token stored in the image)."""
import datetime as dt
import hashlib
import json
import os
import subprocess

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from conftest import Server, free_port, run_cli
from pki import NOW, SiteChain, new_key, write
from tsa_peers import OpensslTsa, tsa_cert

from sifguard.tsp import request as R
from sifguard.tsp import token as T
from sifguard.tsp.authority import Authority

MSG = b"the DSSE signature value"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return SiteChain(tmp_path_factory.mktemp("trust"), cn="tsa-site")


def mint(site, cert, key=None, now=None, message=MSG, policy="1.2.3.4", widen=False):
    """A token from the TSA core with this certificate (whatever its profile)."""
    a = Authority(cert, key, (cert, site.inter), policy)
    if widen:    # a hostile TSA: issues tokens whatever its certificate's validity says
        a._not_before, a._not_after = dt.datetime(1970, 1, 2, tzinfo=dt.timezone.utc), \
            dt.datetime(9999, 1, 1, tzinfo=dt.timezone.utc)
    q = R.request(message)
    return R.read_reply(a.respond(q.der, now or dt.datetime.now(dt.timezone.utc), int.from_bytes(os.urandom(8), "big")), q)


def refused(der, site, why, message=MSG):
    with pytest.raises(T.TimestampError, match=why):
        T.verify(T.parse(der), message, [site.root], [site.inter])


def test_a_good_token_from_the_core(site):
    k = new_key()
    der = mint(site, tsa_cert(k, site.int_key, site.inter), k)
    tt = T.verify(T.parse(der), MSG, [site.root])
    assert tt.tsa_path[-1] == site.root and abs((tt.gen_time - NOW).total_seconds()) < 3600


@pytest.mark.parametrize("kw,why", [
    ({"eku": ()}, "lacks the timeStamping extended key usage"),
    ({"eku": (ExtendedKeyUsageOID.CODE_SIGNING,)}, "not timeStamping alone"),
    ({"eku": (ExtendedKeyUsageOID.TIME_STAMPING, ExtendedKeyUsageOID.CODE_SIGNING)}, "not timeStamping alone"),
    ({"eku_critical": False}, "not critical"),
])
def test_tsa_certificate_profile(site, kw, why):
    k = new_key()
    refused(mint(site, tsa_cert(k, site.int_key, site.inter, **kw), k), site, why)


def test_code_signing_leaf_cannot_time_stamp(site):
    """A signer's own certificate (codeSigning) making tokens for itself: refused."""
    refused(mint(site, site.leaf, site.leaf_key), site, "TSA certificate")


@pytest.mark.parametrize("offset_days", [-10, +40])
def test_gen_time_outside_the_tsa_validity(site, offset_days):
    k = new_key()
    c = tsa_cert(k, site.int_key, site.inter, start=NOW - dt.timedelta(hours=1), days=30)
    der = mint(site, c, k, now=NOW + dt.timedelta(days=offset_days), widen=True)
    refused(der, site, "outside the TSA certificate's validity")


def test_openssl_tsa_with_an_expired_certificate(tmp_path, site):
    """openssl ts -reply signs with an expired TSA certificate: the token still must not count."""
    t = OpensslTsa(tmp_path / "old", site.int_key, site.inter, chain=(site.inter,),
                   start=NOW - dt.timedelta(days=40), days=30)
    refused(t.token(MSG), site, "outside the TSA certificate's validity")


def test_untrusted_tsa_and_its_own_roots(tmp_path, site):
    other = SiteChain(tmp_path, cn="other")
    k = new_key()
    der = mint(other, tsa_cert(k, other.int_key, other.inter), k)
    refused(der, site, "TSA not trusted")
    assert T.verify(T.parse(der), MSG, [other.root]).tsa_path[-1] == other.root


def test_edited_gen_time_breaks_the_token(site):
    """Backdating by editing the TSTInfo: the signed message digest no longer matches."""
    from asn1crypto import cms, tsp
    k = new_key()
    der = mint(site, tsa_cert(k, site.int_key, site.inter), k)
    ci = cms.ContentInfo.load(der)
    eci = ci["content"]["encap_content_info"]
    tst = tsp.TSTInfo.load(eci["content"].contents)
    tst["gen_time"] = NOW - dt.timedelta(days=300)
    eci["content"] = cms.ParsableOctetString(tst.dump(force=True))
    edited = ci.dump(force=True)
    assert T.parse(edited).gen_time < NOW - dt.timedelta(days=299)
    refused(edited, site, "does not match its signed message digest")


def test_flipped_signature_and_other_message(site):
    from asn1crypto import cms
    k = new_key()
    der = mint(site, tsa_cert(k, site.int_key, site.inter), k)
    refused(der, site, "over another signature", message=b"other")
    ci = cms.ContentInfo.load(der)
    si = ci["content"]["signer_infos"][0]
    sig = bytearray(si["signature"].native)
    sig[-3] ^= 1
    si["signature"] = bytes(sig)
    refused(ci.dump(force=True), site, "does not verify")


def test_swapped_certificate_fails_the_ess_binding(site):
    """Same issuer, serial and key, other content (a CA that issued one serial twice): the
    embedded certificate swapped for the twin must not be taken for the signer."""
    from asn1crypto import cms, x509 as ax509
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    k = new_key()
    real = tsa_cert(k, site.int_key, site.inter)
    twin = (x509.CertificateBuilder().subject_name(real.subject).issuer_name(real.issuer)
            .public_key(k.public_key()).serial_number(real.serial_number)
            .not_valid_before(real.not_valid_before_utc).not_valid_after(real.not_valid_after_utc + dt.timedelta(days=900))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
            .sign(site.int_key, hashes.SHA256()))
    der = mint(site, real, k)
    ci = cms.ContentInfo.load(der)
    ci["content"]["certificates"] = cms.CertificateSet([cms.CertificateChoices({"certificate": ax509.Certificate.load(
        twin.public_bytes(serialization.Encoding.DER))})])
    swapped = ci.dump(force=True)
    with pytest.raises(T.TimestampError, match="ESS signing-certificate"):
        T.verify(T.parse(swapped), MSG, [site.root], [site.inter])


def test_tsa_certificate_that_is_a_ca(site):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    k = new_key()
    c = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "CA TSA")]))
         .issuer_name(site.inter.subject).public_key(k.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - dt.timedelta(hours=1)).not_valid_after(NOW + dt.timedelta(days=3))
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
         .sign(site.int_key, hashes.SHA256()))
    refused(mint(site, c, k), site, "is a CA certificate")


def test_too_many_certificates_in_a_token(site):
    from asn1crypto import cms, x509 as ax509
    from cryptography.hazmat.primitives import serialization
    k = new_key()
    der = mint(site, tsa_cert(k, site.int_key, site.inter), k)
    ci = cms.ContentInfo.load(der)
    one = ax509.Certificate.load(site.inter.public_bytes(serialization.Encoding.DER))
    ci["content"]["certificates"] = cms.CertificateSet([cms.CertificateChoices({"certificate": one})] * 11)
    refused(ci.dump(force=True), site, "embeds 11 certificates")


# --- end to end with the site's own TSA (`ca serve /tsa`) ---------------------------------
@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    d = tmp_path_factory.mktemp("ca")
    port = free_port()
    r = run_cli("ca", "init", "--ca", d / "ca", "--name", "TS Site", "--url", f"http://127.0.0.1:{port}")
    assert r.rc == 0, r
    r = run_cli("ca", "issue", "--ca", d / "ca", "--cn", "builder", "--out-key", d / "b.key", "--out", d / "b.pem")
    assert r.rc == 0, r
    srv = Server(d / "ca", port=port)
    yield {"dir": d, "ca": d / "ca", "url": srv.url, "key": d / "b.key", "cert": d / "b.pem"}
    srv.stop()


def test_ca_serve_tokens_in_an_image(ca, copy_vector, tmp_path):
    p = copy_vector("apptainer/images/one-group.sif", "site.sif")
    r = run_cli("sign", p, "--key", ca["key"], "--cert", ca["cert"], "--tsa", ca["url"] + "/tsa",
                "--tsa-roots", ca["ca"] / "root.pem")
    assert r.rc == 0, r
    from sifguard.integrity import dsse
    from sifguard.sif.image import SifImage
    with SifImage(p) as img:
        so = next(d for d in img.objects if d.is_signature)
        entry = dsse.decode(img.read_object(so)).signatures[0]
    tok = write(tmp_path / "t.der", entry.timestamps[0])
    v = subprocess.run(["openssl", "ts", "-verify", "-digest", hashlib.sha256(entry.sig).hexdigest(), "-token_in",
                        "-in", tok, "-CAfile", str(ca["ca"] / "root.pem"), "-untrusted",
                        str(ca["ca"] / "intermediate.pem")], capture_output=True, text=True)
    assert "Verification: OK" in v.stdout, v
    pol = write(tmp_path / "p.yaml", f"""version: 1
trust: {{roots: [{ca['ca'] / 'root.pem'}]}}
revocation: {{mode: enforce, cache_dir: {tmp_path / 'cache'}}}
audit: {{log: {tmp_path / 'audit.jsonl'}}}
cache: {{images: null}}
rules:
  - name: stamped
    require: signed
    verification: {{level: strict, timestamp: required}}
""".encode())
    r = run_cli("verify", p, "--policy", pol, "--json")
    assert r.rc == 0, r
    v = json.loads(r.out)
    assert v["checks"]["timestamp"]["result"] == "pass" and v["signers"][0]["time"]["basis"] == "timestamp"
    # the TSA certificate's revocation was asked about too (the site's OCSP answers for it)
    assert any("TSA" in x["subject"] for x in v["revocation"]), v["revocation"]
    line = json.loads(open(tmp_path / "audit.jsonl").read().splitlines()[-1])
    assert line["checks"]["expiry"]["result"] == "pass"
