"""The lifecycle end to end, against a real `sifguard ca serve` (OCSP, CRLs and the TSA at
/tsa) on 127.0.0.1: issue, sign with a time-stamp, the certificate expires — the image
still runs; the signer is revoked for a benign reason — it still runs; a key is compromised —
its images stop. Then the revocation matrix: every reason × signed (time-stamped) before or
after the revocation × the OCSP path and the CRL path."""
import datetime as dt
import json
import os
import shutil
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import DATA, Server, free_port, run_cli
from pki import key_pem, new_key, pem, write

from sifguard.ca.names import REASON_NAMES

VECTOR = os.path.join(DATA, "apptainer", "images", "one-group.sif")
BENIGN = {"affiliationChanged", "superseded", "cessationOfOperation", "certificateHold", "privilegeWithdrawn"}


def utcnow():
    return dt.datetime.now(dt.timezone.utc)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    d = tmp_path_factory.mktemp("life")
    port = free_port()
    ca = d / "ca"
    r = run_cli("ca", "init", "--ca", ca, "--name", "Life Site", "--url", f"http://127.0.0.1:{port}")
    assert r.rc == 0, r
    srv = Server(ca, port=port)
    yield {"d": d, "ca": ca, "url": srv.url}
    srv.stop()


def policy(site, tag, path="ocsp", extra_rule=""):
    d = site["d"]
    rev = (f"  responders: [{{issuer: '*', url: 'http://127.0.0.1:1/'}}]\n  crl_fallback: true\n"
           if path == "crl" else "  crl_fallback: false\n")
    return write(d / f"policy-{tag}.yaml", f"""version: 1
trust: {{roots: [{site['ca'] / 'root.pem'}]}}
revocation:
  mode: enforce
  timeout: 5
  cache_dir: {d / ('cache-' + tag)}
{rev}audit: {{log: {d / 'audit.jsonl'}}}
cache: {{images: null}}
rules:
{extra_rule}  - name: default
    require: signed
""".encode())


def issue(site, cn, seconds=None):
    """A code-signing leaf recorded in the CA's database: `ca issue`, or (seconds=N) one made with
    cryptography's builders under the CA's intermediate that expires N seconds from now."""
    d = site["d"]
    key, out = d / f"{cn}.key", d / f"{cn}.pem"
    if seconds is None:
        r = run_cli("ca", "issue", "--ca", site["ca"], "--cn", cn, "--out-key", key, "--out", out)
        assert r.rc == 0, r
        return str(key), str(out)
    from sifguard.ca.store import CAStore
    store = CAStore(str(site["ca"]))
    ikey = serialization.load_pem_private_key(open(site["ca"] / "intermediate.key", "rb").read(), None)
    inter = store.intermediate
    k = new_key()
    ref = x509.load_pem_x509_certificate(open(site["ca"] / "intermediate.pem", "rb").read())
    aia = ref.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    now = utcnow()
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(inter.subject).public_key(k.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(seconds=seconds))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.AuthorityInformationAccess([a for a in aia.value if a.access_method ==
                                                             x509.oid.AuthorityInformationAccessOID.OCSP]),
                           critical=False)
            .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                [x509.UniformResourceIdentifier(site["url"] + "/crl.der")], None, None, None)]), critical=False)
            .sign(ikey, hashes.SHA256()))
    with store.db:
        store._insert(leaf, "code-signing", now)
    write(key, key_pem(k), 0o600)
    write(out, pem(leaf, inter))
    return str(key), str(out)


def sign(site, key, cert, name, tsa=True):
    p = str(site["d"] / name)
    shutil.copyfile(VECTOR, p)
    os.chmod(p, 0o644)
    r = run_cli("sign", p, "--key", key, "--cert", cert, *(["--tsa", site["url"] + "/tsa"] if tsa else []))
    assert r.rc == 0, r
    return p


def verify(image, pol):
    r = run_cli("verify", image, "--policy", pol, "--json")
    assert r.rc in (0, 1), r
    return r.rc, json.loads(r.out)


def revoke(site, cert, reason, *extra):
    r = run_cli("ca", "revoke", "--ca", site["ca"], "--cert", cert, "--reason", reason, *extra)
    assert r.rc == 0, r


def test_lifecycle(site):
    key, cert = issue(site, "short-lived", seconds=5)
    stamped = sign(site, key, cert, "stamped.sif")
    plain = sign(site, key, cert, "plain.sif", tsa=False)
    key2, cert2 = issue(site, "stolen", seconds=5)
    stolen = sign(site, key2, cert2, "stolen.sif")
    pol = policy(site, "life")
    for p in (stamped, plain, stolen):
        assert verify(p, pol)[0] == 0
    time.sleep(max(0.0, (x509.load_pem_x509_certificate(open(cert, "rb").read()).not_valid_after_utc
                         - utcnow()).total_seconds()) + 1.5)
    # the certificate has expired: the time-stamped image still runs, the other does not
    rc, v = verify(stamped, pol)
    assert rc == 0, v["reason"]
    assert v["signers"][0]["time"]["basis"] == "timestamp" and v["checks"]["expiry"]["result"] == "pass"
    rc, v = verify(plain, pol)
    assert rc == 1 and "expired" in v["reason"]
    # the OCSP answer about the expired certificate counts: the responder states its archive cutoff
    rc, v = verify(stamped, policy(site, "life-crl", "crl"))
    assert rc == 0, v["reason"]                          # and the CRL states ExpiredCertsOnCRL
    # the builder leaves: revoked for a benign reason after signing: still runs
    time.sleep(1.1)
    revoke(site, cert, "affiliationChanged")
    rc, v = verify(stamped, policy(site, "life2"))
    assert rc == 0, v["reason"]
    assert any(r.get("spared") for r in v["revocation"]), v["revocation"]
    # a stolen key: every image it signed stops, time-stamp or not
    revoke(site, cert2, "keyCompromise")
    rc, v = verify(stolen, policy(site, "life3"))
    assert rc == 1 and "keyCompromise" in v["reason"] and v["checks"]["revocation"]["result"] == "fail"


def test_invalidity_date_before_signing_refuses(site):
    key, cert = issue(site, "invalid-since")
    img = sign(site, key, cert, "invalid-since.sif")
    time.sleep(1.1)
    past = (utcnow() - dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    revoke(site, cert, "superseded", "--invalidity-date", past)
    for path in ("ocsp", "crl"):
        rc, v = verify(img, policy(site, f"inv-{path}", path))
        assert rc == 1 and "revoked" in v["reason"], (path, v["reason"])


@pytest.fixture(scope="module")
def matrix(site):
    """Every reason × signed before / after the revocation: all signing and revoking first,
    with one pause between them (genTime and revocation times have one-second resolution)."""
    cases = {}
    for reason in REASON_NAMES:
        for when in ("before", "after"):
            key, cert = issue(site, f"m-{reason}-{when}")
            cases[(reason, when)] = (key, cert)
    for (reason, when), (key, cert) in cases.items():
        if when == "before":
            cases[(reason, when)] += (sign(site, key, cert, f"m-{reason}-{when}.sif"),)
        else:
            revoke(site, cert, reason)
    time.sleep(2.2)
    for (reason, when), (key, cert, *rest) in list(cases.items()):
        if when == "before":
            revoke(site, cert, reason)
        else:
            cases[(reason, when)] = (key, cert, sign(site, key, cert, f"m-{reason}-{when}.sif"))
    return cases


@pytest.mark.parametrize("path", ["ocsp", "crl"])
@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("reason", REASON_NAMES)
def test_revocation_matrix(site, matrix, reason, when, path):
    image = matrix[(reason, when)][2]
    rc, v = verify(image, policy(site, f"m-{path}", path))
    stands = when == "before" and reason in BENIGN
    assert (rc == 0) is stands, (reason, when, path, v["reason"])
    mine = [r for r in v["revocation"] if r.get("role") != "tsa"]
    assert mine and path in mine[0]["source"], v["revocation"]          # "ocsp" / "crl" / "cache (crl)"
    if stands:
        assert mine[0]["spared"] and mine[0]["revocation_reason"] == reason
    else:
        assert "revoked" in v["reason"]
