"""Attacks on issue 10 (time-stamps, revocation by reason, levels, quorums) by a job user or an
outsider with a stolen or expired key. Each finding is a test that failed before its fix; the
attacks that were refused already stay in the tables at the bottom so they stay refused.

Real parts: tokens minted by the TSA core (sifguard.tsp.authority.Authority, the code behind
`ca serve /tsa`) and edited with asn1crypto, certificates from cryptography's builders, the
pure decision core fed real certificate paths (as tests/test_levels_decisions.py)."""
import datetime as dt
import os
from dataclasses import dataclass

import pytest
from cryptography import x509

from pki import SiteChain, cert, new_key
from tsa_peers import tsa_cert

from sifguard.enforce import core
from sifguard.enforce.decide import _signer
from sifguard.enforce.revocation_time import revocation_spares
from sifguard.policy.model import Quorum, Rule, SignerPattern, Verification
from sifguard.tsp import request as R
from sifguard.tsp import token as T
from sifguard.tsp.authority import Authority
from sifguard.tsp.token import TrustedTime

NOW = dt.datetime.now(dt.timezone.utc)
MSG = b"the DSSE signature value"
DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Answer:
    status: str
    source: str = "ocsp"
    reason: str = ""
    subject: str = "CN=x"
    revoked_at: object = None
    revocation_reason: object = None
    invalidity_date: object = None

    def as_dict(self):
        return {"status": self.status, "source": self.source, "reason": self.reason, "subject": self.subject}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return SiteChain(tmp_path_factory.mktemp("atk"), cn="atk-site")


def mint(site, accuracy=1, message=MSG, now=None):
    """A real token from the TSA core; `accuracy` may be forced outside what `Authority`
    accepts (a misbehaving or hostile TSA the site trusts, e.g. an external one in tsa_roots)."""
    k = new_key()
    c = tsa_cert(k, site.int_key, site.inter)
    a = Authority(c, k, (c, site.inter), "1.2.3.4")
    a.accuracy = accuracy
    q = R.request(message)
    return R.read_reply(a.respond(q.der, now or NOW, int.from_bytes(os.urandom(8), "big")), q)


# --- finding 1: accuracy values that backdate or crash --------------------------------------
@pytest.mark.parametrize("accuracy,why", [
    (-30 * 86400, "accuracy"),            # latest = genTime - 30 days: "made before" a revocation 29 days old
    (-1, "accuracy"),
    (10 ** 12, "accuracy"),                # genTime + accuracy past year 9999: OverflowError in `latest`
    (86400 * 999_999_000, "accuracy"),     # timedelta's own limit: an OverflowError while parsing
])
def test_token_accuracy_outside_sense_does_not_count(site, accuracy, why):
    der = mint(site, accuracy)
    with pytest.raises(T.TimestampError, match=why):
        tt = T.verify(T.parse(der), MSG, [site.root], [site.inter])
        T.earliest([tt])     # where a huge accuracy used to raise OverflowError (a traceback in verify)


def test_negative_accuracy_would_spare_a_post_revocation_signature(site):
    """Why it matters: with accuracy -30 days, a signature time-stamped *after* an
    affiliationChanged revocation looked made before it (the token's latest instant is what
    revocation_spares compares). Such a token no longer parses, and TrustedTime.latest ignores
    a negative accuracy."""
    fake = TrustedTime(NOW, dt.timedelta(days=-30), "1.2.3.4", 1, (site.inter,))
    answer = Answer("revoked", revoked_at=(NOW - DAY).timestamp(), revocation_reason="affiliationChanged")
    assert revocation_spares(answer, fake) is None            # the core never lets it move latest back
    with pytest.raises(T.TimestampError, match="accuracy"):
        T.parse(mint(site, -30 * 86400))                      # closed at the token


# --- the decision core over real certificate paths ----------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("atk-core")
    s = SiteChain(d, cn="core-site")
    tsa = SiteChain(d, cn="core-tsa")
    k = {n: new_key() for n in ("b1", "rev", "sec")}
    leaves = {
        "b1": cert(k["b1"], "builder-1", s.int_key, s.inter),
        "b1again": cert(k["b1"], "builder-1", s.int_key, s.inter),          # a renewal: the same key
        "b1sec": cert(k["b1"], "builder-1", s.int_key, s.inter, email="b1@sec.example.org"),  # same key, other role
        "rev": cert(k["rev"], "builder-revoked", s.int_key, s.inter),
        "secrev": cert(k["sec"], "reviewer", s.int_key, s.inter, email="rev@sec.example.org"),
        "stamped": cert(new_key(), "builder-stamped", s.int_key, s.inter),
    }
    out = {n: _signer(1, [leaf, s.inter, s.root]) for n, leaf in leaves.items()}
    out["_tsa"] = tsa
    out["_serial"] = {n: leaf.serial_number for n, leaf in leaves.items()}
    return out


SETS = (("builders", (SignerPattern(subject="CN=builder-*"),)),
        ("security", (SignerPattern(email="*@sec.example.org"),)))


def _decide(pki, rule, signers, revoked: dict):
    group = tuple(signers)
    f = core.Findings(True, groups=((1, group, ()),))

    def lookup(c, issuer, links_left=1):
        return revoked.get(c.serial_number, Answer("good"))
    return core.decide((rule,), "/apps/x.sif", f, lookup, "enforce", signer_sets=SETS)


def _compromised(subject="CN=x"):
    return Answer("revoked", reason="revoked (keyCompromise)", subject=subject,
                  revoked_at=(NOW - DAY).timestamp(), revocation_reason="keyCompromise")


# --- finding 2: a revoked quorum signer replaced by a second certificate of a key already counted
@pytest.mark.parametrize("slots,names,stand_in", [
    (("builders", "builders"), ["b1", "rev", "b1again"], "b1again"),   # a renewal of b1 stands in for rev
    (("builders", "security"), ["b1", "secrev", "b1sec"], "b1sec"),    # b1's key in a security certificate
])
def test_revoked_quorum_signer_not_replaced_by_a_key_already_counted(pki, slots, names, stand_in):
    rule = Rule(name="two", quorum=Quorum(2, slots))
    signers = [pki[n] for n in names]
    bad = names[1]
    v = _decide(pki, rule, signers, {pki["_serial"][bad]: _compromised()})
    assert not v.allowed, v.reason      # one person's key (two certificates) must not fill two slots
    # a stand-in with a key of its own still works (tests/test_levels_decisions.py: rev, b2, sec)


# --- finding 3: reasons outside the benign list spared (a deny-list fails open) --------------
@pytest.mark.parametrize("reason", [
    "key_compromise",                         # cryptography's ReasonFlags.name (what ocsp/answers.py prints)
    "ca_compromise", "aa_compromise",
    x509.ReasonFlags.key_compromise,          # the enum itself
    x509.ReasonFlags.unspecified,
    "removeFromCRL", "remove_from_crl",       # not a revocation reason for a revoked certificate
    "KeyCompromise", "keycompromise", "", "somethingNew",
])
def test_only_benign_reasons_spare(pki, reason):
    tsa = pki["_tsa"]
    at = TrustedTime(NOW - 10 * DAY, dt.timedelta(seconds=1), "1.2", 1, (tsa.leaf, tsa.inter, tsa.root))
    answer = Answer("revoked", revoked_at=(NOW - DAY).timestamp(), revocation_reason=reason)
    assert revocation_spares(answer, at) is None


@pytest.mark.parametrize("reason", ["affiliationChanged", "superseded", "cessationOfOperation", "certificateHold",
                                    "privilegeWithdrawn", x509.ReasonFlags.affiliation_changed, "affiliation_changed"])
def test_benign_reasons_still_spare_in_every_spelling(pki, reason):
    tsa = pki["_tsa"]
    at = TrustedTime(NOW - 10 * DAY, dt.timedelta(seconds=1), "1.2", 1, (tsa.leaf, tsa.inter, tsa.root))
    assert revocation_spares(Answer("revoked", revoked_at=(NOW - DAY).timestamp(), revocation_reason=reason), at)


@pytest.mark.parametrize("revoked_at,invalid", [
    (NOW - DAY, None),                        # datetimes instead of epoch seconds: a TypeError before
    ((NOW - DAY).timestamp(), NOW - 20 * DAY),
])
def test_revocation_times_as_datetimes(pki, revoked_at, invalid):
    tsa = pki["_tsa"]
    at = TrustedTime(NOW - 10 * DAY, dt.timedelta(seconds=1), "1.2", 1, (tsa.leaf, tsa.inter, tsa.root))
    a = Answer("revoked", revoked_at=revoked_at, revocation_reason="superseded", invalidity_date=invalid)
    assert (revocation_spares(a, at) is None) == (invalid is not None)


# --- finding 4: `timestamp: required` met by a token the TSA's revocation voided --------------
def test_voided_token_does_not_meet_timestamp_required(pki):
    tsa = pki["_tsa"]
    signed_at = TrustedTime(NOW - DAY, dt.timedelta(seconds=1), "1.2", 1, (tsa.leaf, tsa.inter, tsa.root))
    s = core.Signer(**{**pki["stamped"].__dict__, "signed_at": signed_at, "time": (("basis", "timestamp"),)})
    rule = Rule(name="prod", verification=Verification("strict", (), "required"))
    ok = _decide(pki, rule, [s], {})
    assert ok.allowed
    v = _decide(pki, rule, [s], {tsa.leaf.serial_number: _compromised("CN=tsa")})   # a stolen TSA key
    assert not v.allowed, v.reason
    assert dict((c, r) for c, _, r, _ in v.checks).get("timestamp") == "fail"


# --- attacks that were refused already (keep them refused) ---------------------------------
def _edit(der, how):
    from asn1crypto import cms
    ci = cms.ContentInfo.load(der)
    how(ci)
    return ci.dump(force=True)


def _second_signer(ci):
    from asn1crypto import cms
    sis = ci["content"]["signer_infos"]
    ci["content"]["signer_infos"] = cms.SignerInfos([sis[0], sis[0]])


def _ski_of_other(other):
    def how(ci):
        from asn1crypto import cms
        ski = other.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        ci["content"]["signer_infos"][0]["sid"] = cms.SignerIdentifier({"subject_key_identifier": ski})
    return how


def _drop_certs(ci):
    ci["content"]["certificates"] = None


def _der_replace(raw: bytes, old: bytes, new: bytes) -> bytes:
    """`raw` with the element `old` swapped for `new`, every enclosing length re-encoded."""
    from sifguard.tsp import der as D
    e = D.element(raw)
    if raw == old:
        return new
    if not e.tag & 0x20 or old not in raw:
        return raw
    return D.encode(e.tag, b"".join(_der_replace(c.raw, old, new) for c in D.children(e)))


def _long_form_tstinfo(der):
    """The same TSTInfo with BER long-form lengths (its meaning unchanged, its bytes not)."""
    from sifguard.tsp import der as D
    tst = T.parse(der).econtent
    body = tst[2:] if tst[1] < 0x80 else tst[2 + (tst[1] & 0x7F):]
    longer = b"\x30\x84" + len(body).to_bytes(4, "big") + body
    return _der_replace(der, D.encode(0x04, tst), D.encode(0x04, longer))


REFUSED = [
    ("token over another signature (moved between entries)", None, b"another entry's signature", "over another signature"),
    ("a second SignerInfo appended", _second_signer, MSG, "signers"),
    ("TSTInfo re-encoded with long-form lengths", _long_form_tstinfo, MSG, "message digest|malformed"),
    ("certificates removed (TSA not among the roots)", _drop_certs, MSG, "neither in it nor among"),
]


@pytest.mark.parametrize("what,how,message,why", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_token_edits(site, what, how, message, why):
    der = mint(site)
    bad = (how(der) if how is _long_form_tstinfo else _edit(der, how)) if how else der
    assert how is None or bad != der
    with pytest.raises(T.TimestampError, match=why):
        T.verify(T.parse(bad), message, [site.root], [site.inter])


def test_sid_pointing_at_another_certificate(site):
    """The sid is not signed: pointed (by subjectKeyIdentifier) at another valid TSA
    certificate of the site, the token must not verify with it (nor count)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID
    k = new_key()
    other = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Other")]))
             .issuer_name(site.inter.subject).public_key(k.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(NOW - DAY).not_valid_after(NOW + DAY)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
             .sign(site.int_key, hashes.SHA256()))
    bad = _edit(mint(site), _ski_of_other(other))
    with pytest.raises(T.TimestampError):
        T.verify(T.parse(bad), MSG, [site.root], [site.inter, other])


def test_trailing_bytes_after_the_token(site):
    with pytest.raises(T.TimestampError):
        T.parse(mint(site) + b"\x00")


@pytest.mark.parametrize("revoked_at,invalid,spared", [
    (lambda l: l, None, False),                       # revoked exactly at genTime + accuracy
    (lambda l: l + 1, lambda l: l, False),            # invalidity date exactly at the latest instant
    (lambda l: l + 1, None, True),                    # one second after: spared
    (None, None, False),                              # no revocation time: refuses
])
def test_revocation_boundaries(pki, revoked_at, invalid, spared):
    tsa = pki["_tsa"]
    at = TrustedTime(NOW - 10 * DAY, dt.timedelta(seconds=1), "1.2", 1, (tsa.leaf, tsa.inter, tsa.root))
    latest = at.latest.timestamp()
    a = Answer("revoked", revoked_at=revoked_at(latest) if revoked_at else None, revocation_reason="superseded",
               invalidity_date=invalid(latest) if invalid else None)
    assert (revocation_spares(a, at) is not None) == spared


def test_revoked_tsa_before_gen_time_voids_the_token(pki):
    """A benign TSA revocation dated before genTime reaches the token: the signer is judged at
    now (here: fine), and a rule requiring a time-stamp refuses."""
    tsa = pki["_tsa"]
    signed_at = TrustedTime(NOW - DAY, dt.timedelta(seconds=1), "1.2", 1, (tsa.leaf, tsa.inter, tsa.root))
    s = core.Signer(**{**pki["stamped"].__dict__, "signed_at": signed_at})
    early = Answer("revoked", reason="revoked (superseded)", subject="CN=tsa",
                   revoked_at=(NOW - 2 * DAY).timestamp(), revocation_reason="superseded")
    v = _decide(pki, Rule(name="r"), [s], {tsa.leaf.serial_number: early})
    assert v.allowed and any(r.get("role") == "tsa" for r in v.revocation)


# --- finding 5: revocation asked at the URLs of a path the image made up ---------------------
def test_untrusted_path_is_not_asked_about(pki, tmp_path):
    """Under an audit-level rule (authenticity logged) an untrusted signer is acceptable; its
    certificates are the image author's, and so are their OCSP/CRL URLs: asking them sends the
    verifier (the controller's prolog) wherever the image says."""
    other = SiteChain(tmp_path, cn="outsider")
    s = core.Signer(1, (other.leaf, other.inter, other.root), _signer(1, [other.leaf]).identity, (),
                    authentic=False, authenticity="does not chain to a trusted root", expiry=(False, "not judged"))
    asked = []

    def lookup(c, issuer, links_left=1):
        asked.append(c.subject.rfc4514_string())
        return Answer("good")
    f = core.Findings(False, "group 1: no trusted signature", groups=((1, (s,), ()),))
    for rule, allowed in [(Rule(name="a", verification=Verification("audit")), True),
                          (Rule(name="b", verification=Verification("audit", (("revocation", "enforce"),))), False)]:
        v = core.decide((rule,), "/apps/x.sif", f, lookup, "enforce", signer_sets=SETS)
        assert v.allowed is allowed and asked == [], (v.reason, asked)
        assert dict((c, r) for c, _, r, _ in v.checks)["revocation"] == "fail"


# --- finding 6: a decision resting on a voided token reused past the signer's notAfter -------
def test_voided_token_decision_cut_at_not_after(pki):
    from sifguard.enforce.decide import Engine
    tsa = pki["_tsa"]
    signed_at = TrustedTime(NOW - DAY, dt.timedelta(seconds=1), "1.2", 1, (tsa.leaf, tsa.inter, tsa.root))
    s = core.Signer(**{**pki["stamped"].__dict__, "signed_at": signed_at})
    f = core.Findings(True, groups=((1, (s,), ()),))
    v = core.decide((Rule(name="r"),), "/apps/x.sif", f,
                    lambda c, i, n=1: _compromised("CN=tsa") if c.serial_number == tsa.leaf.serial_number
                    else Answer("good"), "enforce", signer_sets=SETS)
    assert v.allowed and any(d.get("time_note") for d in v.signers)     # judged at now instead
    not_after = s.path[0].not_valid_after_utc.timestamp()
    assert Engine.valid_until(v, f, ttl=10 ** 9, now=NOW.timestamp()) <= not_after
    kept = core.decide((Rule(name="r"),), "/apps/x.sif", f, lambda c, i, n=1: Answer("good"), "enforce")
    assert Engine.valid_until(kept, f, ttl=10 ** 9, now=NOW.timestamp()) > not_after   # a token that counts


# --- ESS variants and TSA chains, made by the TSA core for real (refused already) ----------
def _ess_mint(site, ess_certs):
    """A token whose ESS signingCertificateV2 lists `ess_certs(real_cert)`: (cert, issuer DER
    override or None, serial override or None) entries, in order."""
    from asn1crypto import cms, x509 as ax509
    from cryptography.hazmat.primitives import serialization
    import hashlib
    from sifguard.tsp.authority import _frozen
    k = new_key()
    c = tsa_cert(k, site.int_key, site.inter)
    a = Authority(c, k, (c, site.inter), "1.2.3.4")
    ids = []
    for cc, serial in ess_certs(c):
        acert = ax509.Certificate.load(cc.public_bytes(serialization.Encoding.DER))
        ids.append({"cert_hash": hashlib.sha256(acert.dump()).digest(),
                    "issuer_serial": {"issuer": [ax509.GeneralName({"directory_name": acert.issuer})],
                                      "serial_number": serial if serial is not None else acert.serial_number}})
    a._signing_certificate = _frozen(cms.CMSAttribute({"type": "signing_certificate_v2", "values": [{"certs": ids}]}))
    q = R.request(MSG)
    return R.read_reply(a.respond(q.der, NOW, 7), q)


@pytest.mark.parametrize("what,ess,counts", [
    ("ESS lists another certificate first", lambda c, o: [(o, None), (c, None)], False),
    ("ESS lists the signer first, another after", lambda c, o: [(c, None), (o, None)], True),
    ("ESS hash matches, issuerSerial names another serial", lambda c, o: [(c, c.serial_number + 1)], False),
    ("ESS names only another certificate", lambda c, o: [(o, None)], False),
])
def test_ess_binding_variants(site, what, ess, counts):
    other = tsa_cert(new_key(), site.int_key, site.inter, cn="Other TSA")
    der = _ess_mint(site, lambda c: ess(c, other))
    if counts:
        assert T.verify(T.parse(der), MSG, [site.root], [site.inter]).gen_time
    else:
        with pytest.raises(T.TimestampError, match="ESS"):
            T.verify(T.parse(der), MSG, [site.root], [site.inter])


def test_tsa_under_an_intermediate_expired_at_gen_time(tmp_path):
    """The TSA certificate is valid at genTime, its issuing CA is not: the token must not count."""
    root_key, int_key, k = new_key("ec-p384"), new_key(), new_key()
    root = cert(root_key, "R", ca=True, start=NOW - 400 * DAY, days=800)
    inter = cert(int_key, "I", root_key, root, ca=True, start=NOW - 400 * DAY, days=100)   # expired 300 days ago
    c = tsa_cert(k, int_key, inter, start=NOW - 400 * DAY, days=800)
    a = Authority(c, k, (c, inter), "1.2.3.4")
    q = R.request(MSG)
    der = R.read_reply(a.respond(q.der, NOW - 10 * DAY, 9), q)
    with pytest.raises(T.TimestampError, match="TSA not trusted"):
        T.verify(T.parse(der), MSG, [root], [inter])
    der = R.read_reply(a.respond(q.der, NOW - 350 * DAY, 9), q)      # while the intermediate was valid
    assert T.verify(T.parse(der), MSG, [root], [inter]).gen_time < NOW - 349 * DAY


# --- finding 2 end to end: a real image, a policy file, the engine -------------------------
def test_quorum_one_key_two_certificates_end_to_end(tmp_path):
    """One builder with two certificates of one key (a renewal) and a second key of theirs,
    revoked for a compromise, signs an image three times: a `count: 2` quorum of builders must
    refuse (before the fix the revoked signer's slot was given to the renewal)."""
    import shutil
    from conftest import APPT
    from sifguard.enforce.decide import Engine
    from sifguard.integrity.sign import Signer as KeySigner, sign_image
    from sifguard.policy.loader import load

    site = SiteChain(tmp_path, cn="e2e-site")
    k1, k2 = new_key(), new_key()
    c1 = cert(k1, "builder-1", site.int_key, site.inter)
    c1again = cert(k1, "builder-1", site.int_key, site.inter)
    c2 = cert(k2, "builder-2", site.int_key, site.inter)
    img = str(tmp_path / "q.sif")
    shutil.copyfile(os.path.join(APPT, "images", "one-group.sif"), img)
    sign_image(img, [KeySigner(k1, (c1, site.inter)), KeySigner(k2, (c2, site.inter)),
                     KeySigner(k1, (c1again, site.inter))])
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""
version: 1
trust:
  roots: [{site.root_pem}]
revocation: {{mode: enforce}}
audit: {{log: {tmp_path}/audit.jsonl}}
signers:
  builders: [{{subject: "CN=builder-*"}}]
rules:
  - name: two-builders
    match: {{path: "{tmp_path}/**"}}
    require: {{count: 2, signers: [builders, builders]}}
""")

    class Checker:      # the revocation answers (the OCSP client's interface)
        def __init__(self, revoked):
            self.revoked = revoked

        def share(self, deadline, links_left):
            return deadline

        def check(self, c, issuer, deadline=None):
            if c.serial_number in self.revoked:
                return Answer("revoked", reason="revoked (keyCompromise)", subject=c.subject.rfc4514_string(),
                              revoked_at=(NOW - DAY).timestamp(), revocation_reason="keyCompromise")
            return Answer("good", subject=c.subject.rfc4514_string())

    assert Engine(load(str(policy)), checker=Checker(set())).decide(img, cache=False).allowed
    v = Engine(load(str(policy)), checker=Checker({c2.serial_number})).decide(img, cache=False)
    assert not v.allowed, v.reason


# --- finding 7: a token certificate cryptography loads lazily and fails on later --------------
def _bad_issuer(c: x509.Certificate) -> bytes:
    """`c` with its issuer Name's CN an invalid UTF8String: load_der_x509_certificate accepts
    it, reading `.issuer` raises ValueError (the token's certificates are not signed: anyone
    can put such a certificate into a token)."""
    from cryptography.hazmat.primitives import serialization
    from sifguard.tsp import der as D
    bad_name = D.encode(0x30, D.encode(0x31, D.encode(0x30, D.oid("2.5.4.3") + D.encode(0x0C, b"\xff\xfe"))))
    return _der_replace(c.public_bytes(serialization.Encoding.DER), c.issuer.public_bytes(), bad_name)


def test_malformed_certificate_in_a_token_is_a_reason_not_a_crash(site, tmp_path):
    import shutil
    from cryptography.hazmat.primitives import serialization
    from conftest import APPT
    from sifguard.integrity.sign import Signer as KeySigner, sign_image
    from sifguard.integrity.verify import Trust, verify_image
    from sifguard.sif.image import SifImage
    k = new_key()
    c = tsa_cert(k, site.int_key, site.inter)
    a = Authority(c, k, (c, site.inter), "1.2.3.4")

    def stamp(sig):
        q = R.request(sig)
        der = R.read_reply(a.respond(q.der, NOW, 11), q)
        return _der_replace(der, c.public_bytes(serialization.Encoding.DER), _bad_issuer(c))
    with pytest.raises(T.TimestampError):
        T.verify(T.parse(stamp(MSG)), MSG, [site.root], [site.inter])
    sk = new_key()
    leaf = cert(sk, "builder", site.int_key, site.inter)
    img = str(tmp_path / "t.sif")
    shutil.copyfile(os.path.join(APPT, "images", "one-group.sif"), img)
    sign_image(img, [KeySigner(sk, (leaf, site.inter))], stamp=stamp)
    with SifImage(img) as im:
        rep = verify_image(im, Trust(roots=(site.root,), intermediates=(site.inter,)))
    assert rep.verified                                  # judged at now; the token is a reason
    (s,) = rep.signatures
    assert s.time_basis == "now" and s.timestamps[0]["status"] == "invalid"


# --- finding 8: a token stuffed with certificates cost each one's load before the count check --
def test_token_stuffed_with_certificates_refused_before_loading(site):
    """~230 small certificates fit in the 64 KiB a token may have; each was loaded (and, now,
    read in full) before verify() counted them: ~5x the work of a normal token, on every
    decision (cached decisions re-verify tokens). Counted first now."""
    from asn1crypto import cms, x509 as ax509
    from cryptography.hazmat.primitives import serialization
    der = mint(site)
    small = cert(new_key("ed25519"), "x", None, None).public_bytes(serialization.Encoding.DER)
    ci = cms.ContentInfo.load(der)
    ci["content"]["certificates"] = cms.CertificateSet(
        [cms.CertificateChoices({"certificate": ax509.Certificate.load(small)})] * 200)
    stuffed = ci.dump(force=True)
    assert len(stuffed) <= T.MAX_TOKEN_BYTES
    with pytest.raises(T.TimestampError, match="200 certificates"):
        T.parse(stuffed)


# --- finding 9: a token dated in the future counted (judged at a time that has not come) ------
def test_token_from_the_future_does_not_count(site, tmp_path):
    """A TSA with a wrong clock (or a hostile one) dates a signature 20 days ahead: the signer's
    certificate, not valid before 10 days from now, was judged valid "at the signing time"."""
    import shutil
    from conftest import APPT
    from sifguard.integrity.sign import Signer as KeySigner, sign_image
    from sifguard.integrity.verify import Trust, verify_image
    from sifguard.sif.image import SifImage
    k = new_key()
    c = tsa_cert(k, site.int_key, site.inter, start=NOW - DAY, days=60)
    a = Authority(c, k, (c, site.inter), "1.2.3.4")

    def stamp(sig, when):
        q = R.request(sig)
        return R.read_reply(a.respond(q.der, when, 12), q)
    sk = new_key()
    leaf = cert(sk, "builder", site.int_key, site.inter, start=NOW + 10 * DAY, days=30)   # not valid yet
    for when, verified in ((NOW + 20 * DAY, False), (NOW, False)):
        img = str(tmp_path / f"f{verified}{when.day}.sif")
        shutil.copyfile(os.path.join(APPT, "images", "one-group.sif"), img)
        sign_image(img, [KeySigner(sk, (leaf, site.inter))], stamp=lambda sig: stamp(sig, when))
        with SifImage(img) as im:
            rep = verify_image(im, Trust(roots=(site.root,), intermediates=(site.inter,)))
        assert rep.verified is verified, rep.reason
    # a token a little ahead of the clock (skew) still counts
    tt_ok = stamp(MSG, NOW + dt.timedelta(minutes=1))
    assert T.verify(T.parse(tt_ok), MSG, [site.root], [site.inter])
