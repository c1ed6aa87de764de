"""The site Time-Stamping Authority (RFC 3161 server side): `sifguard ca init`/`ca tsa-init`
issue it, `sifguard ca serve` answers at /tsa. Requests are made and tokens read and verified
by `openssl ts` (an independent peer); certificates are checked with cryptography and
`openssl verify -purpose timestampsign`. Also the pure core (sifguard.tsp.authority) without HTTP.
"""
import datetime as dt
import hashlib
import json
import os
import re
import subprocess

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from conftest import Server, free_port, run_cli

QUERY = "application/timestamp-query"
REPLY = "application/timestamp-reply"
# OpenSSL's `ts -reply -text` wording of the failInfo bits (crypto/ts/ts_rsp_print.c)
FAIL_TEXT = {
    "badAlg": "unrecognized or unsupported algorithm identifier",
    "badRequest": "transaction not permitted or supported",
    "badDataFormat": "the data submitted has the wrong format",
    "unacceptedPolicy": "the requested TSA policy is not supported by the TSA",
    "unacceptedExtension": "the requested extension is not supported by the TSA",
    "systemFailure": "the request cannot be handled due to system failure",
}


def sh(*cmd, input=None, check=True):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, input=input, timeout=60)
    if check:
        assert p.returncode == 0, (cmd, p.stdout[-800:], p.stderr[-800:])
    return p


class Site:
    """A CA made by `sifguard ca init`, its `ca serve` on 127.0.0.1, and openssl helpers."""

    def __init__(self, d, key_type="ec-p256", extra_init=(), serve=True, serve_args=()):
        self.d = d
        self.port = free_port()
        self.ca = d / "ca"
        r = run_cli("ca", "init", "--ca", self.ca, "--name", f"TSA {key_type}", "--key-type", key_type,
                    "--url", f"http://127.0.0.1:{self.port}", *extra_init)
        assert r.rc == 0, r
        self.data = d / "data.bin"
        self.data.write_bytes(os.urandom(5000))
        self.srv = None
        if serve:
            self.start(*serve_args)

    def start(self, *args):
        self.srv = Server(self.ca, *args, port=self.port)
        self.url = self.srv.url

    def stop(self):
        if self.srv is not None:
            self.srv.stop()
            self.srv = None

    @property
    def config(self):
        return json.loads((self.ca / "ca.json").read_text())

    def file(self, name):
        return str(self.ca / name)

    def query(self, *opts, data=None) -> bytes:
        out = self.d / "q.tsq"
        sh("openssl", "ts", "-query", "-data", data or self.data, *opts, "-out", out)
        return out.read_bytes()

    def post(self, body: bytes, ctype=QUERY, path="/tsa"):
        headers = {"Content-Type": ctype} if ctype is not None else {}
        return requests.post(self.url + path, data=body, headers=headers, timeout=10)

    def stamp(self, *opts, data=None) -> bytes:
        r = self.post(self.query(*opts, data=data))
        assert r.status_code == 200 and r.headers["Content-Type"] == REPLY, r
        return r.content

    def text(self, reply: bytes) -> str:
        path = self.d / "r.tsr"
        path.write_bytes(reply)
        return sh("openssl", "ts", "-reply", "-in", path, "-text").stdout.decode()

    def verify(self, reply: bytes, data=None, with_tsa_cert=False, queryfile=None):
        path = self.d / "v.tsr"
        path.write_bytes(reply)
        src = ["-queryfile", queryfile] if queryfile else ["-data", data or self.data]
        untrusted = self.file("intermediate.pem")
        if with_tsa_cert:          # openssl takes one -untrusted file: a bundle
            untrusted = self.d / "untrusted.pem"
            untrusted.write_bytes(open(self.file("tsa.pem"), "rb").read()
                                  + open(self.file("intermediate.pem"), "rb").read())
        p = sh("openssl", "ts", "-verify", *src, "-in", path, "-CAfile", self.file("root.pem"),
               "-untrusted", untrusted, check=False)
        return p.stdout.decode() + p.stderr.decode()


def field(text: str, name: str) -> str:
    m = re.search(rf"^{re.escape(name)}: (.*)$", text, re.M)
    assert m, (name, text)
    return m.group(1).strip()


def query_nonce(site: Site) -> str:
    return field(sh("openssl", "ts", "-query", "-in", site.d / "q.tsq", "-text").stdout.decode(), "Nonce")


def token_parts(reply: bytes):
    """(TSTInfo, SignedData) of a granted reply, parsed with asn1crypto."""
    from asn1crypto import tsp
    from sifguard.tsp.authority import _response_type
    resp = _response_type().load(reply)
    sd = resp["time_stamp_token"]["content"]
    tst = tsp.TSTInfo.load(sd["encap_content_info"]["content"].contents)
    return tst, sd


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    s = Site(tmp_path_factory.mktemp("tsa-ec"))
    yield s
    s.stop()


# --- granted tokens, read and verified by openssl ------------------------------------------------
class TestGranted:
    def test_nonce_and_certs(self, site):
        reply = site.stamp("-sha256", "-cert")
        assert "Verification: OK" in site.verify(reply)
        assert "Verification: OK" in site.verify(reply, queryfile=site.d / "q.tsq")
        t = site.text(reply)
        assert field(t, "Status") == "Granted."
        assert field(t, "Version") == "1"
        assert field(t, "Policy OID") == site.config["tsa_policy"]
        assert field(t, "Hash Algorithm") == "sha256"
        assert field(t, "Accuracy").startswith("0x01 seconds")
        assert field(t, "Ordering") == "no"
        assert field(t, "Nonce") == query_nonce(site)
        assert field(t, "TSA") == "unspecified"

    def test_no_nonce(self, site):
        reply = site.stamp("-sha256", "-cert", "-no_nonce")
        assert "Verification: OK" in site.verify(reply)
        assert field(site.text(reply), "Nonce") == "unspecified"
        tst, _ = token_parts(reply)
        assert tst["nonce"].native is None

    def test_certreq_off_carries_no_certificates(self, site):
        reply = site.stamp("-sha256")
        _, sd = token_parts(reply)
        assert not sd["certificates"].native
        out = site.verify(reply)
        assert "Verification: OK" not in out          # the TSA certificate is nowhere
        assert "Verification: OK" in site.verify(reply, with_tsa_cert=True)

    def test_certreq_on_carries_tsa_and_intermediate(self, site):
        _, sd = token_parts(site.stamp("-sha256", "-cert"))
        ders = [c.chosen.dump() for c in sd["certificates"]]
        want = [x509.load_pem_x509_certificate(open(site.file(n), "rb").read()).public_bytes(serialization.Encoding.DER)
                for n in ("tsa.pem", "intermediate.pem")]
        assert ders == want

    @pytest.mark.parametrize("alg", ["sha384", "sha512"])
    def test_longer_imprints(self, site, alg):
        reply = site.stamp(f"-{alg}", "-cert")
        assert "Verification: OK" in site.verify(reply)
        assert field(site.text(reply), "Hash Algorithm") == alg

    def test_our_policy_requested(self, site):
        reply = site.stamp("-sha256", "-cert", "-tspolicy", site.config["tsa_policy"])
        assert "Verification: OK" in site.verify(reply)

    def test_gen_time_is_now_to_the_second(self, site):
        before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        tst, _ = token_parts(site.stamp("-sha256"))
        after = dt.datetime.now(dt.timezone.utc)
        assert before <= tst["gen_time"].native <= after
        assert tst["gen_time"].native.microsecond == 0

    def test_signed_attributes(self, site):
        tst, sd = token_parts(site.stamp("-sha256", "-cert"))
        assert sd["version"].native == "v3"
        assert sd["encap_content_info"]["content_type"].dotted == "1.2.840.113549.1.9.16.1.4"
        si = sd["signer_infos"][0]
        assert si["digest_algorithm"]["algorithm"].native == "sha256"
        attrs = {a["type"].native: a["values"][0] for a in si["signed_attrs"]}
        assert set(attrs) == {"content_type", "message_digest", "signing_certificate_v2"}
        tsa_der = open(site.file("tsa.pem"), "rb").read()
        tsa = x509.load_pem_x509_certificate(tsa_der)
        ess = attrs["signing_certificate_v2"]["certs"][0]
        assert ess["cert_hash"].native == hashlib.sha256(tsa.public_bytes(serialization.Encoding.DER)).digest()
        assert ess["issuer_serial"]["serial_number"].native == tsa.serial_number
        assert si["sid"].chosen["serial_number"].native == tsa.serial_number
        signed = si["signed_attrs"].dump()
        tsa.public_key().verify(si["signature"].native, b"\x31" + signed[1:], ec.ECDSA(hashes.SHA256()))

    def test_same_query_twice_two_tokens(self, site):
        body = site.query("-sha256", "-no_nonce")
        a, b = site.post(body).content, site.post(body).content
        assert token_parts(a)[0]["serial_number"].native != token_parts(b)[0]["serial_number"].native


# --- rejections: HTTP 200 with an RFC 3161 rejection ------------------------------------------------
def rejected(site, reply: bytes, fail: str):
    t = site.text(reply)
    assert field(t, "Status") == "Rejected.", t
    assert field(t, "Failure info") == FAIL_TEXT[fail], t
    assert "TST info:\nNot included." in t


def crafted(site, **change) -> bytes:
    """openssl's query with fields changed (asn1crypto re-encodes it)."""
    from asn1crypto import tsp
    req = tsp.TimeStampReq.load(site.query("-sha256", "-cert"))
    req = tsp.TimeStampReq({k: req[k] for k in ("version", "message_imprint", "nonce", "cert_req")})
    for k, v in change.items():
        req[k] = v
    return req.dump()


def raw_request(oid: str, params: bytes | None, digest: bytes) -> bytes:
    """A TimeStampReq with any AlgorithmIdentifier (asn1crypto's own insists on NULL for SHA-2)."""
    from asn1crypto import core

    class Alg(core.Sequence):
        _fields = [("algorithm", core.ObjectIdentifier), ("parameters", core.Any, {"optional": True})]

    class Imprint(core.Sequence):
        _fields = [("hash_algorithm", Alg), ("hashed_message", core.OctetString)]

    class Req(core.Sequence):
        _fields = [("version", core.Integer), ("message_imprint", Imprint)]

    alg = {"algorithm": oid}
    if params is not None:
        alg["parameters"] = core.Any.load(params)
    return Req({"version": 1, "message_imprint": {"hash_algorithm": alg, "hashed_message": digest}}).dump()


class TestRejected:
    def test_foreign_policy(self, site):
        rejected(site, site.stamp("-sha256", "-tspolicy", "1.3.6.1.4.1.99999.1"), "unacceptedPolicy")

    @pytest.mark.parametrize("alg", ["sha1", "md5", "sha224"])
    def test_weak_or_unlisted_hash(self, site, alg):
        rejected(site, site.stamp(f"-{alg}"), "badAlg")

    @pytest.mark.parametrize("body", [b"", b"\x00", b"\x30\x00", b"not a request at all", os.urandom(300),
                                      b"\x30\x82\xff\xff" + b"\x00" * 40],
                             ids=["empty", "nul", "empty-seq", "text", "random", "long-length"])
    def test_garbage(self, site, body):
        r = site.post(body)
        assert r.status_code == 200 and r.headers["Content-Type"] == REPLY
        rejected(site, r.content, "badDataFormat")

    def test_truncated_and_trailing(self, site):
        q = site.query("-sha256")
        rejected(site, site.post(q[:-1]).content, "badDataFormat")
        rejected(site, site.post(q + b"\x00").content, "badDataFormat")

    def test_ocsp_request_body(self, site):
        ocsp_req = sh("openssl", "ocsp", "-issuer", site.file("intermediate.pem"), "-cert", site.file("tsa.pem"),
                      "-reqout", "/dev/stdout").stdout
        rejected(site, site.post(ocsp_req).content, "badDataFormat")

    def test_version_2(self, site):
        rejected(site, site.post(crafted(site, version=2)).content, "badRequest")

    @pytest.mark.parametrize("n", [0, 20, 31, 33, 64])
    def test_digest_of_wrong_length(self, site, n):
        body = crafted(site, message_imprint={"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": b"\x01" * n})
        rejected(site, site.post(body).content, "badDataFormat")

    @pytest.mark.parametrize("oid,params", [("2.16.840.1.101.3.4.2.1", b"\x04\x01x"),     # sha256, OCTET STRING
                                            ("2.16.840.1.101.3.4.2.1", b"\x02\x01\x00"),  # sha256, INTEGER
                                            ("1.2.3.4", None),                              # unknown hash
                                            ("1.2.840.10045.4.3.2", None)])                 # a signature alg
    def test_hash_algorithm_identifier(self, site, oid, params):
        rejected(site, site.post(raw_request(oid, params, b"\x01" * 32)).content, "badAlg")

    def test_absent_hash_parameters_granted(self, site):
        body = crafted(site, message_imprint={"hash_algorithm": {"algorithm": "sha256"},
                                              "hashed_message": hashlib.sha256(site.data.read_bytes()).digest()})
        reply = site.post(body).content
        assert "Verification: OK" in site.verify(reply)

    def test_extensions(self, site):
        body = crafted(site, extensions=[{"extn_id": "1.3.6.1.4.1.99999.3", "critical": False,
                                          "extn_value": b"\x05\x00"}])
        rejected(site, site.post(body).content, "unacceptedExtension")


# --- HTTP -------------------------------------------------------------------------------------------
class TestHttp:
    @pytest.mark.parametrize("ctype", ["application/ocsp-request", "text/plain", "application/octet-stream", None])
    def test_wrong_content_type(self, site, ctype):
        assert site.post(site.query("-sha256"), ctype=ctype).status_code == 415

    def test_content_type_parameters_accepted(self, site):
        r = site.post(site.query("-sha256", "-cert"), ctype="Application/TimeStamp-Query; charset=binary")
        assert r.status_code == 200 and "Verification: OK" in site.verify(r.content)

    @pytest.mark.parametrize("size", [64 * 1024 + 1, 1 << 20])
    def test_oversize_body(self, site, size):
        assert site.post(b"\x30" * size).status_code == 413

    def test_get_describes(self, site):
        r = requests.get(site.url + "/tsa", timeout=10)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
        assert site.config["tsa_policy"] in r.text and QUERY in r.text
        assert requests.head(site.url + "/tsa", timeout=10).status_code == 200

    def test_tsa_pem(self, site):
        r = requests.get(site.url + "/tsa.pem", timeout=10)
        assert r.status_code == 200 and r.content == open(site.file("tsa.pem"), "rb").read()

    @pytest.mark.parametrize("method,path", [("PUT", "/tsa"), ("DELETE", "/tsa"), ("POST", "/tsa.pem")])
    def test_other_methods(self, site, method, path):
        assert requests.request(method, site.url + path, data=b"x", timeout=10).status_code == 405

    def test_trailing_slash(self, site):
        r = requests.post(site.url + "/tsa/", data=site.query("-sha256", "-cert"), headers={"Content-Type": QUERY},
                          timeout=10)
        assert "Verification: OK" in site.verify(r.content)

    def test_ocsp_still_answers_on_other_paths(self, site):
        for path in ("/", "/ocsp"):
            out = sh("openssl", "ocsp", "-issuer", site.file("intermediate.pem"), "-cert", site.file("tsa.pem"),
                     "-url", site.url + path, "-CAfile", site.file("root.pem"), "-no_nonce").stdout.decode()
            assert f"{site.file('tsa.pem')}: good" in out, out
        crl = x509.load_der_x509_crl(requests.get(site.url + "/crl.der", timeout=10).content)
        assert crl.issuer == x509.load_pem_x509_certificate(open(site.file("intermediate.pem"), "rb").read()).subject


class TestSerials:
    def test_200_distinct(self, site):
        body = site.query("-sha256", "-no_nonce")
        serials = set()
        with requests.Session() as s:
            for _ in range(200):
                r = s.post(site.url + "/tsa", data=body, headers={"Content-Type": QUERY}, timeout=10)
                tst, _ = token_parts(r.content)
                n = tst["serial_number"].native
                assert 0 < n < 1 << 160
                serials.add(n)
        assert len(serials) == 200

    def test_serial_as_openssl_prints_it(self, site):
        reply = site.stamp("-sha256")
        tst, _ = token_parts(reply)
        assert int(field(site.text(reply), "Serial number"), 16) == tst["serial_number"].native


# --- key types --------------------------------------------------------------------------------------
@pytest.mark.parametrize("key_type,tsa_key", [("rsa-3072", rsa.RSAPublicKey), ("ec-p384", ec.EllipticCurvePublicKey),
                                              ("ed25519", ec.EllipticCurvePublicKey)])
def test_key_types(tmp_path, key_type, tsa_key):
    s = Site(tmp_path, key_type)
    try:
        tsa = x509.load_pem_x509_certificate(open(s.file("tsa.pem"), "rb").read())
        assert isinstance(tsa.public_key(), tsa_key)       # an Ed25519 CA gets an EC P-256 TSA
        if key_type == "ec-p384":
            assert tsa.public_key().curve.name == "secp384r1"
        for opts in (("-sha256", "-cert"), ("-sha512",)):
            reply = s.stamp(*opts)
            assert "Verification: OK" in s.verify(reply, with_tsa_cert="-cert" not in opts)
        sh("openssl", "verify", "-purpose", "timestampsign", "-CAfile", s.file("root.pem"),
           "-untrusted", s.file("intermediate.pem"), s.file("tsa.pem"))
    finally:
        s.stop()


# --- the CA side: profile, files, tsa-init, revocation, passphrases ----------------------------------
class TestCertificate:
    def test_profile(self, site):
        tsa = x509.load_pem_x509_certificate(open(site.file("tsa.pem"), "rb").read())
        inter = x509.load_pem_x509_certificate(open(site.file("intermediate.pem"), "rb").read())
        eku = tsa.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
        ku = tsa.extensions.get_extension_for_class(x509.KeyUsage)
        assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
        bc = tsa.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and not bc.value.ca
        aki = tsa.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == inter.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier).value.digest
        tsa.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        aia = tsa.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        assert {d.access_location.value for d in aia} == {f"{site.url}/", f"{site.url}/intermediate.crt"}
        dp = tsa.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        assert dp[0].full_name[0].value == f"{site.url}/crl.der"
        assert tsa.issuer == inter.subject
        tsa.verify_directly_issued_by(inter)
        assert tsa.not_valid_after_utc <= inter.not_valid_after_utc

    def test_openssl_purpose(self, site):
        sh("openssl", "verify", "-purpose", "timestampsign", "-CAfile", site.file("root.pem"),
           "-untrusted", site.file("intermediate.pem"), site.file("tsa.pem"))
        # the code-signing leaves are not time-stamping certificates, nor is the TSA a code signer
        p = sh("openssl", "verify", "-purpose", "codesign", "-CAfile", site.file("root.pem"),
               "-untrusted", site.file("intermediate.pem"), site.file("tsa.pem"), check=False)
        assert p.returncode != 0

    def test_files_and_record(self, site):
        assert os.stat(site.file("tsa.key")).st_mode & 0o777 == 0o600
        assert re.fullmatch(r"2\.25\.[1-9][0-9]*", site.config["tsa_policy"])
        assert int(site.config["tsa_policy"].split(".")[2]) < 1 << 128
        assert site.config["tsa_accuracy_seconds"] == 1
        rows = json.loads(run_cli("ca", "list", "--ca", site.ca, "--json").out)["certificates"]
        tsa = x509.load_pem_x509_certificate(open(site.file("tsa.pem"), "rb").read())
        row = [r for r in rows if r["profile"] == "tsa"]
        assert len(row) == 1 and int(row[0]["serial"], 16) == tsa.serial_number and row[0]["status"] == "valid"


def test_policies_differ_per_ca_and_can_be_chosen(tmp_path):
    pols = []
    for i in range(2):
        assert run_cli("ca", "init", "--ca", tmp_path / f"ca{i}", "--name", "P").rc == 0
        pols.append(json.loads((tmp_path / f"ca{i}" / "ca.json").read_text())["tsa_policy"])
    assert pols[0] != pols[1]
    assert run_cli("ca", "init", "--ca", tmp_path / "ca9", "--name", "P", "--tsa-policy", "1.3.6.1.4.1.99999.7").rc == 0
    assert json.loads((tmp_path / "ca9" / "ca.json").read_text())["tsa_policy"] == "1.3.6.1.4.1.99999.7"


@pytest.mark.parametrize("bad", ["abc", "1", "1.2.", "1.02.3", "3.1", "1.40.1", "0.39.x", "", "1.2.3 "])
def test_bad_policy_refused_before_anything_is_written(tmp_path, bad):
    r = run_cli("ca", "init", "--ca", tmp_path / "ca", "--name", "P", "--tsa-policy", bad)
    assert r.rc == 2 and r.err.count("\n") == 1 and "--tsa-policy" in r.err
    assert not (tmp_path / "ca").exists()


class TestTsaInit:
    def test_refuses_existing_then_force(self, tmp_path):
        s = Site(tmp_path, serve=False)
        before = (s.ca / "tsa.pem").read_bytes(), (s.ca / "tsa.key").read_bytes()
        policy = s.config["tsa_policy"]
        r = run_cli("ca", "tsa-init", "--ca", s.ca)
        assert r.rc == 2 and r.err.count("\n") == 1 and "--force" in r.err
        assert ((s.ca / "tsa.pem").read_bytes(), (s.ca / "tsa.key").read_bytes()) == before
        r = run_cli("ca", "tsa-init", "--ca", s.ca, "--force")
        assert r.rc == 0 and r.out.count("\n") == 1 and "replaced" in r.out, r
        assert (s.ca / "tsa.pem").read_bytes() != before[0] and (s.ca / "tsa.key").read_bytes() != before[1]
        assert s.config["tsa_policy"] == policy
        old = x509.load_pem_x509_certificate(before[0])
        rows = {int(r["serial"], 16): r for r in json.loads(run_cli("ca", "list", "--ca", s.ca, "--json").out)
                ["certificates"] if r["profile"] == "tsa"}
        assert len(rows) == 2 and rows[old.serial_number]["status"] == "valid"      # not revoked
        s.start()
        try:
            reply = s.stamp("-sha256", "-cert")
            assert "Verification: OK" in s.verify(reply)
            assert field(s.text(reply), "Policy OID") == policy
        finally:
            s.stop()

    def test_old_ca_without_tsa(self, tmp_path):
        s = Site(tmp_path, serve=False)
        for n in ("tsa.pem", "tsa.key"):
            os.unlink(s.file(n))
        cfg = s.config
        old_policy = cfg.pop("tsa_policy")
        cfg.pop("tsa_accuracy_seconds")
        (s.ca / "ca.json").write_text(json.dumps(cfg))
        s.start()
        try:
            r = s.post(s.query("-sha256"))
            assert r.status_code == 404 and "tsa-init" in r.text
            assert requests.get(s.url + "/tsa.pem", timeout=10).status_code == 404
            out = sh("openssl", "ocsp", "-issuer", s.file("intermediate.pem"), "-cert", s.file("ocsp-responder.pem"),
                     "-url", s.url, "-CAfile", s.file("root.pem")).stdout.decode()
            assert ": good" in out
        finally:
            s.stop()
        r = run_cli("ca", "tsa-init", "--ca", s.ca, "--tsa-policy", "1.3.6.1.4.1.99999.42", "--days", "30")
        assert r.rc == 0 and r.out.count("\n") == 1 and "issued" in r.out, r
        assert s.config["tsa_policy"] == "1.3.6.1.4.1.99999.42" != old_policy
        assert s.config["tsa_accuracy_seconds"] == 1
        tsa = x509.load_pem_x509_certificate(open(s.file("tsa.pem"), "rb").read())
        left = tsa.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
        assert dt.timedelta(days=29) < left <= dt.timedelta(days=30)
        assert os.stat(s.file("tsa.key")).st_mode & 0o777 == 0o600
        s.start()
        try:
            reply = s.stamp("-sha256", "-cert", "-tspolicy", "1.3.6.1.4.1.99999.42")
            assert "Verification: OK" in s.verify(reply)
        finally:
            s.stop()

    @pytest.mark.parametrize("args,what", [(["--days", "99999"], "--days"), (["--days", "0"], "--days"),
                                           (["--tsa-policy", "x.y"], "--tsa-policy")])
    def test_bad_input(self, tmp_path, args, what):
        s = Site(tmp_path, serve=False)
        before = (s.ca / "tsa.pem").read_bytes()
        r = run_cli("ca", "tsa-init", "--ca", s.ca, "--force", *args)
        assert r.rc == 2 and r.err.count("\n") == 1 and what in r.err, r
        assert (s.ca / "tsa.pem").read_bytes() == before

    def test_not_a_ca(self, tmp_path):
        r = run_cli("ca", "tsa-init", "--ca", tmp_path)
        assert r.rc == 2 and r.err.count("\n") == 1


class TestPassphrase:
    def test_encrypted_ca(self, tmp_path):
        pf = tmp_path / "pass"
        pf.write_text("correct horse\n")
        s = Site(tmp_path, extra_init=("--passphrase-file", pf), serve=False)
        assert b"ENCRYPTED" in (s.ca / "tsa.key").read_bytes()
        # tsa-init needs the passphrase (it signs with the intermediate)
        r = run_cli("ca", "tsa-init", "--ca", s.ca, "--force")
        assert r.rc == 2 and r.err.count("\n") == 1
        r = run_cli("ca", "tsa-init", "--ca", s.ca, "--force", "--passphrase-file", pf)
        assert r.rc == 0, r
        assert b"ENCRYPTED" in (s.ca / "tsa.key").read_bytes()
        s.start("--passphrase-file", pf)
        try:
            assert "Verification: OK" in s.verify(s.stamp("-sha256", "-cert"))
        finally:
            s.stop()
        # the OCSP key decrypted for unattended serving, the TSA key still locked: /tsa 503, OCSP fine
        key = serialization.load_pem_private_key((s.ca / "ocsp-responder.key").read_bytes(), b"correct horse")
        (s.ca / "ocsp-responder.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        s.start()
        try:
            r = s.post(s.query("-sha256"))
            assert r.status_code == 503 and "passphrase" in r.text
            assert requests.get(s.url + "/tsa", timeout=10).status_code == 503
            out = sh("openssl", "ocsp", "-issuer", s.file("intermediate.pem"), "-cert", s.file("tsa.pem"),
                     "-url", s.url, "-CAfile", s.file("root.pem")).stdout.decode()
            assert f"{s.file('tsa.pem')}: good" in out
        finally:
            s.stop()


def test_revoked_tsa(tmp_path):
    s = Site(tmp_path)
    try:
        assert "Verification: OK" in s.verify(s.stamp("-sha256", "-cert"))
        r = run_cli("ca", "revoke", "--ca", s.ca, "--cert", s.file("tsa.pem"), "--reason", "keyCompromise")
        assert r.rc == 0, r
        rejected(s, s.stamp("-sha256", "-cert"), "systemFailure")
        out = sh("openssl", "ocsp", "-issuer", s.file("intermediate.pem"), "-cert", s.file("tsa.pem"),
                 "-url", s.url, "-CAfile", s.file("root.pem")).stdout.decode()
        assert f"{s.file('tsa.pem')}: revoked" in out
        crl = x509.load_der_x509_crl(requests.get(s.url + "/crl.der", timeout=10).content)
        tsa = x509.load_pem_x509_certificate(open(s.file("tsa.pem"), "rb").read())
        assert crl.get_revoked_certificate_by_serial_number(tsa.serial_number) is not None
    finally:
        s.stop()


# --- the pure core, no HTTP -------------------------------------------------------------------------
def _chain(kind):
    from pki import cert as mkcert, new_key
    root_key, int_key, tsa_key = new_key("ec-p384"), new_key("ec-p256"), new_key(kind)
    root = mkcert(root_key, "Pure Root", ca=True, days=30)
    inter = mkcert(int_key, "Pure Issuing CA", root_key, root, ca=True, days=30)
    tsa = mkcert(tsa_key, "Pure TSA", int_key, inter, eku=(ExtendedKeyUsageOID.TIME_STAMPING,), days=10)
    return root, inter, tsa, tsa_key


def _request(alg="sha256", digest=None, nonce=None, policy=None, cert_req=True, **extra):
    from asn1crypto import tsp
    r = {"version": 1, "message_imprint": {"hash_algorithm": {"algorithm": alg},
                                           "hashed_message": digest if digest is not None else
                                           hashlib.new(alg, b"data").digest()},
         "cert_req": cert_req}
    if nonce is not None:
        r["nonce"] = nonce
    if policy is not None:
        r["req_policy"] = policy
    r.update(extra)
    return tsp.TimeStampReq(r).dump()


def _status(der):
    from sifguard.tsp.authority import _response_type
    st = _response_type().load(der)["status"]
    return st["status"].native, (st["fail_info"].native or set()), st["status_string"].native


class TestAuthority:
    POLICY = "1.3.6.1.4.1.99999.5"

    @pytest.fixture(params=["ec-p256", "ec-p384", "rsa", "ed25519"])
    def tsa(self, request):
        from sifguard.tsp.authority import Authority
        root, inter, cert, key = _chain(request.param)
        return Authority(cert, key, (cert, inter), self.POLICY, accuracy=3)

    def test_token_fields_and_signature(self, tsa):
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=123456)
        der = tsa.respond(_request(nonce=-77), now, 424242)
        assert _status(der)[0] == "granted"
        tst, sd = token_parts(der)
        assert tst["serial_number"].native == 424242 and tst["nonce"].native == -77
        assert tst["gen_time"].native == now.replace(microsecond=0)
        assert tst["policy"].dotted == self.POLICY and tst["accuracy"]["seconds"].native == 3
        assert tst["message_imprint"]["hashed_message"].native == hashlib.sha256(b"data").digest()
        si = sd["signer_infos"][0]
        ed = isinstance(tsa.key, ed25519.Ed25519PrivateKey)
        digest = "sha512" if ed else "sha256"
        assert si["digest_algorithm"]["algorithm"].native == digest
        assert sd["digest_algorithms"][0]["algorithm"].native == digest
        attrs = {a["type"].native: a["values"][0].native for a in si["signed_attrs"]}
        content = sd["encap_content_info"]["content"].contents
        assert attrs["message_digest"] == hashlib.new(digest, content).digest()
        signed = b"\x31" + si["signed_attrs"].dump()[1:]
        pub, sig = tsa.cert.public_key(), si["signature"].native
        if ed:
            pub.verify(sig, signed)
        elif isinstance(pub, rsa.RSAPublicKey):
            pub.verify(sig, signed, padding.PKCS1v15(), hashes.SHA256())
        else:
            pub.verify(sig, signed, ec.ECDSA(hashes.SHA256()))
        assert len(sd["certificates"]) == 2

    def test_every_token_size_verifies(self, tsa):
        """Nonces of 1 to 60 bytes move every length in the token across the sizes where DER
        length octets end in 0x80 (128, 384 bytes): each token still carries the exact bytes signed."""
        now = dt.datetime.now(dt.timezone.utc)
        for n in range(1, 61):
            der = tsa.respond(_request(nonce=(1 << (8 * n - 2)) + n), now, (1 << 150) + n)
            tst, sd = token_parts(der)
            assert tst["nonce"].native == (1 << (8 * n - 2)) + n
            si = sd["signer_infos"][0]
            attrs = {a["type"].native: a["values"][0].native for a in si["signed_attrs"]}
            content = sd["encap_content_info"]["content"].contents
            assert content == tst.dump()
            digest = si["digest_algorithm"]["algorithm"].native
            assert attrs["message_digest"] == hashlib.new(digest, content).digest()
            signed, sig, pub = b"\x31" + si["signed_attrs"].dump()[1:], si["signature"].native, tsa.cert.public_key()
            if isinstance(pub, ed25519.Ed25519PublicKey):
                pub.verify(sig, signed)
            elif isinstance(pub, rsa.RSAPublicKey):
                pub.verify(sig, signed, padding.PKCS1v15(), hashes.SHA256())
            else:
                pub.verify(sig, signed, ec.ECDSA(hashes.SHA256()))
            assert _status(der)[0] == "granted"

    def test_no_objects_retained_per_token(self, tsa):
        """A long-running worker signs millions of tokens: nothing may accumulate per token."""
        import gc
        now = dt.datetime.now(dt.timezone.utc)
        body = _request(nonce=5)
        counts = []
        for _ in range(3):
            for i in range(300):
                tsa.respond(body, now, i + 1)
            gc.collect()
            counts.append(len(gc.get_objects()))
        assert counts[2] - counts[1] < 100, counts

    def test_rejections(self, tsa):
        now = dt.datetime.now(dt.timezone.utc)
        cases = [
            (b"\x30" * (64 * 1024 + 1), "bad_request"),
            (b"", "bad_data_format"),
            (_request(version=2), "bad_request"),
            (_request("sha1"), "bad_alg"),
            (_request("md5"), "bad_alg"),
            (_request(digest=b"x" * 20), "bad_data_format"),
            (_request("sha384", digest=b"x" * 32), "bad_data_format"),
            (_request(policy="1.2.3.4"), "unaccepted_policy"),
        ]
        for body, fail in cases:
            status, info, text = _status(tsa.respond(body, now, 1))
            assert (status, info) == ("rejection", {fail}), (fail, text)
            assert len(text) == 1 and text[0]
        assert _status(tsa.respond(_request(policy=self.POLICY), now, 1))[0] == "granted"

    def test_outside_certificate_validity(self, tsa):
        for now in (tsa.cert.not_valid_before_utc - dt.timedelta(seconds=1),
                    tsa.cert.not_valid_after_utc + dt.timedelta(seconds=1)):
            assert _status(tsa.respond(_request(), now, 1))[:2] == ("rejection", {"system_failure"})

    def test_caller_errors(self, tsa):
        with pytest.raises(ValueError):
            tsa.respond(_request(), dt.datetime.now(), 1)
        for serial in (0, -1, 1 << 160, True):
            with pytest.raises(ValueError):
                tsa.respond(_request(), dt.datetime.now(dt.timezone.utc), serial)

    def test_no_cert_req(self, tsa):
        _, sd = token_parts(tsa.respond(_request(cert_req=False), dt.datetime.now(dt.timezone.utc), 9))
        assert not sd["certificates"].native

    def test_construction_refuses(self):
        from sifguard.errors import KeyMaterialError
        from sifguard.tsp.authority import Authority
        _, inter, cert, key = _chain("ec-p256")
        _, _, _, other = _chain("ec-p256")
        with pytest.raises(KeyMaterialError):
            Authority(cert, other, (cert, inter), self.POLICY)
        for policy in ("x", "1", "5.1", ""):
            with pytest.raises(ValueError):
                Authority(cert, key, (cert, inter), policy)
        for acc in (0, -1, 1.5, True):
            with pytest.raises(ValueError):
                Authority(cert, key, (cert, inter), self.POLICY, acc)


def test_mutated_requests_never_raise():
    """Every byte flip, truncation and insertion of a real request is answered with a
    well-formed TimeStampResp (granted or rejected), never an exception."""
    import random
    from sifguard.tsp.authority import Authority
    _, inter, cert, key = _chain("ec-p256")
    tsa = Authority(cert, key, (cert, inter), TestAuthority.POLICY)
    base = _request(nonce=12345, policy=TestAuthority.POLICY)
    rng = random.Random(3161)
    now = dt.datetime.now(dt.timezone.utc)
    seen = set()
    for i in range(1500):
        b = bytearray(base)
        op = i % 3
        pos = rng.randrange(len(b))
        if op == 0:
            b[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            del b[pos:]
        else:
            b[pos:pos] = bytes([rng.randrange(256)])
        status, info, _ = _status(tsa.respond(bytes(b), now, i + 1))
        seen.add((status, tuple(sorted(info))))
    assert ("granted", ()) in seen and ("rejection", ("bad_data_format",)) in seen


def test_importing_the_core_does_not_load_asn1crypto():
    import sys
    code = ("import sys, sifguard.tsp.authority, sifguard.ca.tsa; "
            "print(any(m.startswith('asn1crypto') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out
