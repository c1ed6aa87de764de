"""Issue 8, classes 5 and 10: bounded path building, one key policy, nameConstraints,
hostile embedded certificates as refusals. Real SIF images, real certificates."""
import datetime as dt
import functools
import ipaddress
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from chain_images import (any_cert, ca_cert, cross_signed_loop, long_chain, raw_signed_image, same_key_loop,
                          signed_image)
from pki import NOW, cert, key_pem, new_key, pem, write
from sifguard.errors import RefusedError, SifguardError
from sifguard.integrity.verify import Trust, verify_image
from sifguard.sif.image import SifImage
from sifguard.x509 import keys
from sifguard.x509.chain import ChainError, PathLimits, SignatureMemo, build_path


@pytest.fixture(scope="module")
def site():
    rk = new_key("ec-p384")
    return rk, cert(rk, "Site Root", ca=True)


def _verify(cli, img, *roots, extra=()):
    r = cli("verify", img, "--roots", *roots, *extra)
    assert "internal error" not in r.err, r
    return r


def _refused(r, *words):
    assert r.rc == 1 and r.err.strip().count("\n") == 0, r
    for w in words:
        assert w in r.err, (w, r)


# --- class 5: path building is bounded ------------------------------------------------
@pytest.mark.parametrize("n", [4, 8, 9])
def test_same_key_self_issued_copies_refused_by_a_bound(cli, tmp_path, site, n):
    leaf_key, leaf, cas = same_key_loop(n)
    img = signed_image(tmp_path, leaf_key, [leaf] + cas)
    root_pem = write(tmp_path / "root.pem", pem(site[1]))
    r = _verify(cli, img, root_pem)
    assert r.rc == 1
    assert "certificate path search exceeded" in r.err or "does not chain to a trusted root" in r.err, r


@pytest.mark.parametrize("n", [10, 16, 64])
def test_x5c_over_the_cap_refused_with_its_reason(cli, tmp_path, site, n):
    leaf_key, leaf, cas = same_key_loop(n)
    img = signed_image(tmp_path, leaf_key, [leaf] + cas)
    root_pem = write(tmp_path / "root.pem", pem(site[1]))
    _refused(_verify(cli, img, root_pem), f"signature embeds {n + 1} certificates (at most 10 accepted)")


def test_cross_signed_loop_in_x5c_refused(cli, tmp_path, site):
    leaf_key, leaf, cas = cross_signed_loop(3)                    # 9 CA certificates + leaf = 10
    img = signed_image(tmp_path, leaf_key, [leaf] + cas)
    root_pem = write(tmp_path / "root.pem", pem(site[1]))
    r = _verify(cli, img, root_pem)
    _refused(r)
    assert "certificate path search exceeded" in r.err or "does not chain to a trusted root" in r.err, r


def test_chain_deeper_than_the_bound_refused(cli, tmp_path, site):
    rk, root = site
    leaf_key, leaf, inters = long_chain(9, rk, root)             # leaf + 9 intermediates + root
    img = signed_image(tmp_path, leaf_key, [leaf] + inters)
    root_pem = write(tmp_path / "root.pem", pem(root))
    _refused(_verify(cli, img, root_pem), "exceeded the maximum depth of 8")
    # the same chain one shorter is fine (the bound is not an off-by-one trap)
    leaf_key, leaf, inters = long_chain(7, rk, root)
    img = signed_image(tmp_path, leaf_key, [leaf] + inters, "ok.sif")
    assert _verify(cli, img, root_pem).rc == 0


def test_policy_engine_refuses_the_explosion_image(cli, tmp_path, site):
    """The controller prolog and SPANK helper go through the Engine (verify --policy)."""
    leaf_key, leaf, cas = same_key_loop(9)
    img = signed_image(tmp_path, leaf_key, [leaf] + cas)
    root_pem = write(tmp_path / "root.pem", pem(site[1]))
    pol = tmp_path / "policy.yaml"
    pol.write_text(f"version: 1\ntrust: {{roots: [{root_pem}]}}\nrevocation: {{mode: off}}\n"
                   f"audit: {{log: {tmp_path}/audit.jsonl}}\nrules:\n  - name: default\n    require: signed\n")
    r = cli("verify", img, "--policy", pol)
    assert r.rc == 1 and "internal error" not in r.err, r


@pytest.mark.parametrize("shape,n,bound", [
    ("same-key", 100, "exceeded 64 candidate issuers"),
    ("cross", 8, "certificate path search exceeded"),
])
def test_library_bounds_hold_without_the_x5c_cap(site, shape, n, bound):
    """Operator-given intermediates are not capped: the search bounds alone must stop it."""
    leaf_key, leaf, cas = (same_key_loop if shape == "same-key" else cross_signed_loop)(n)
    with pytest.raises(ChainError, match=bound):
        build_path(leaf, cas, [site[1]])


def test_signature_check_budget_names_itself(site):
    leaf_key, leaf, cas = cross_signed_loop(6)
    with pytest.raises(ChainError, match="exceeded 5 signature checks"):
        build_path(leaf, cas, [site[1]], limits=PathLimits(max_signature_checks=5, max_candidates=10_000))


def test_time_budget_names_itself(site):
    leaf_key, leaf, cas = cross_signed_loop(6)
    with pytest.raises(ChainError, match=r"exceeded 0 s"):
        build_path(leaf, cas, [site[1]], limits=PathLimits(max_seconds=0, max_candidates=10_000,
                                                          max_signature_checks=10_000))


def test_two_name_loop_terminates():
    ka, kb = new_key(), new_key()
    a_by_b = ca_cert(ka, "A", kb, "B")
    b_by_a = ca_cert(kb, "B", ka, "A")
    leaf_key = new_key()
    leaf = cert(leaf_key, "x", ka, a_by_b)
    other = new_key()
    with pytest.raises(ChainError, match="does not chain"):
        build_path(leaf, [a_by_b, b_by_a], [cert(other, "Elsewhere", ca=True)])


def test_junk_next_to_a_real_path_does_not_hide_it(tmp_path, site):
    rk, root = site
    ik = new_key()
    inter = ca_cert(ik, "Site Issuing CA", rk, "Site Root")
    junk_key = new_key()
    junk = [ca_cert(junk_key, "Site Issuing CA", junk_key, "Site Issuing CA") for _ in range(5)]
    leaf_key = new_key()
    leaf = cert(leaf_key, "builder", ik, inter)
    path = build_path(leaf, junk + [inter] + junk, [root])
    assert [c.subject for c in path] == [leaf.subject, inter.subject, root.subject]


def test_memo_checks_each_pair_once_and_revalidation_is_cheap(site):
    rk, root = site
    ik = new_key()
    inter = ca_cert(ik, "Site Issuing CA", rk, "Site Root")
    dup = ca_cert(ik, "Site Issuing CA", rk, "Site Root")         # same key, another serial
    leaf = cert(new_key(), "builder", ik, inter)
    memo = SignatureMemo()
    path = build_path(leaf, [inter, dup, inter], [root], memo=memo)
    first = memo.checks
    assert first == 2                                              # (leaf, ik) and (inter, root key)
    assert build_path(path[0], path[1:], [root], memo=memo) == path
    assert memo.checks == first                                    # a cache hit re-validates for free
    # validity is still judged at the time asked, memo or not
    with pytest.raises(ChainError, match="expired"):
        build_path(path[0], path[1:], [root], NOW + dt.timedelta(days=400), memo=memo)


def test_verify_image_returns_the_validated_path_objects(tmp_path, site):
    rk, root = site
    ik = new_key()
    inter = ca_cert(ik, "Site Issuing CA", rk, "Site Root")
    leaf_key = new_key()
    leaf = cert(leaf_key, "builder", ik, inter)
    img = signed_image(tmp_path, leaf_key, [leaf, inter])
    with SifImage(img) as f:
        rep = verify_image(f, Trust(roots=(root,)))
    assert rep.verified
    chain = rep.signatures[0].chain
    assert [c.subject for c in chain] == [leaf.subject, inter.subject, root.subject]
    assert all(isinstance(c, x509.Certificate) for c in chain)


def test_chain_error_is_a_refusal():
    assert issubclass(ChainError, RefusedError) and issubclass(ChainError, SifguardError)
    assert ChainError("x").exit_code == 1


# --- kept behaviours ---------------------------------------------------------------
def _three(site, inter_kw=None, inter_ext=(), leaf_kw=None):
    rk, root = site
    ik = new_key()
    inter = ca_cert(ik, "Site Issuing CA", rk, "Site Root", extensions=inter_ext, **(inter_kw or {}))
    leaf = any_cert(new_key(), "builder", ik, "Site Issuing CA", **(leaf_kw or {}))
    return leaf, inter, root


def test_unknown_critical_extension_refused(site):
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    leaf, inter, root = _three(site, inter_ext=[(ext, True)])
    with pytest.raises(ChainError, match="unsupported critical extension 1.3.6.1.4.1.99999.1"):
        build_path(leaf, [inter], [root])


def test_nested_eku_refused(site):
    eku = x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH])
    leaf, inter, root = _three(site, inter_ext=[(eku, False)])
    with pytest.raises(ChainError, match="excludes codeSigning"):
        build_path(leaf, [inter], [root])


def test_path_length_refused(site):
    rk, root = site
    k1, k2 = new_key(), new_key()
    i1 = ca_cert(k1, "Upper CA", rk, "Site Root", path_length=0)
    i2 = ca_cert(k2, "Lower CA", k1, "Upper CA")
    leaf = any_cert(new_key(), "builder", k2, "Lower CA")
    with pytest.raises(ChainError, match="path length constraint of 'Upper CA'"):
        build_path(leaf, [i2, i1], [root])


def test_ed25519_root_and_any_root_file_cert_is_an_anchor():
    rk = ed25519.Ed25519PrivateKey.generate()
    root = ca_cert(rk, "Ed Root", rk, "Ed Root")
    ik = new_key()
    inter = ca_cert(ik, "Issuing", rk, "Ed Root")
    leaf = any_cert(new_key(), "builder", ik, "Issuing")
    assert len(build_path(leaf, [inter], [root])) == 3
    assert len(build_path(leaf, [], [inter])) == 2                # an intermediate in the roots file anchors


# --- class 10: one key policy -----------------------------------------------------------
@functools.lru_cache(maxsize=None)
def kind_key(kind):
    return {"rsa-1024": lambda: rsa.generate_private_key(65537, 1024),
            "rsa-2048": lambda: rsa.generate_private_key(65537, 2048),
            "ed448": ed448.Ed448PrivateKey.generate,
            "ed25519": ed25519.Ed25519PrivateKey.generate,
            "secp256k1": lambda: ec.generate_private_key(ec.SECP256K1()),
            "p-224": lambda: ec.generate_private_key(ec.SECP224R1()),
            "p-256": lambda: ec.generate_private_key(ec.SECP256R1()),
            "p-384": lambda: ec.generate_private_key(ec.SECP384R1()),
            "p-521": lambda: ec.generate_private_key(ec.SECP521R1()),
            "dsa": lambda: dsa.generate_private_key(2048)}[kind]()


KINDS = ["rsa-1024", "rsa-2048", "ed448", "ed25519", "secp256k1", "p-224", "p-256", "p-384", "p-521", "dsa"]
ALLOWED = {"rsa-2048", "ed25519", "p-256", "p-384", "p-521"}


@pytest.mark.parametrize("kind", KINDS)
def test_key_policy_signer_leaf(cli, tmp_path, site, kind):
    rk, root = site
    ik = new_key()
    inter = ca_cert(ik, "Site Issuing CA", rk, "Site Root")
    k = kind_key(kind)
    leaf = any_cert(k, "builder", ik, "Site Issuing CA")
    img = raw_signed_image(tmp_path, k, [leaf, inter])
    r = _verify(cli, img, write(tmp_path / "root.pem", pem(root)))
    if kind in ALLOWED:
        assert r.rc == 0, r
    else:
        _refused(r, "key policy")


@pytest.mark.parametrize("kind", KINDS)
def test_key_policy_intermediate(cli, tmp_path, site, kind):
    rk, root = site
    ik = kind_key(kind)
    inter = ca_cert(ik, "Site Issuing CA", rk, "Site Root")
    leaf_key = new_key()
    leaf = any_cert(leaf_key, "builder", ik, "Site Issuing CA")
    img = signed_image(tmp_path, leaf_key, [leaf, inter])
    r = _verify(cli, img, write(tmp_path / "root.pem", pem(root)))
    if kind in ALLOWED:
        assert r.rc == 0, r
    else:
        _refused(r, "key policy", "Site Issuing CA")


@pytest.mark.parametrize("kind", KINDS)
def test_key_policy_exempts_the_sites_own_anchor(cli, tmp_path, kind):
    """Roots in the site's trust file are the administrator's choice (documented)."""
    rk = kind_key(kind)
    root = ca_cert(rk, "Odd Root", rk, "Odd Root")
    ik = new_key()
    inter = ca_cert(ik, "Site Issuing CA", rk, "Odd Root")
    leaf_key = new_key()
    leaf = any_cert(leaf_key, "builder", ik, "Site Issuing CA")
    img = signed_image(tmp_path, leaf_key, [leaf, inter])
    assert _verify(cli, img, write(tmp_path / "root.pem", pem(root))).rc == 0


@pytest.mark.parametrize("kind", KINDS)
def test_key_policy_bare_keys(cli, tmp_path, copy_vector, kind):
    k = kind_key(kind)
    kp = write(tmp_path / "k.pem", key_pem(k), 0o600)
    pub = write(tmp_path / "k.pub", k.public_key().public_bytes(serialization.Encoding.PEM,
                                                               serialization.PublicFormat.SubjectPublicKeyInfo))
    p = copy_vector("apptainer/images/one-group.sif")
    before = open(p, "rb").read()
    s = cli("sign", p, "--key", kp)
    if kind in ALLOWED:
        assert s.rc == 0, s
        assert cli("verify", p, "--key", pub).rc == 0
    else:
        _refused(s, "not allowed" if kind not in ("rsa-1024",) else "too small")
        assert open(p, "rb").read() == before                     # nothing written
        signed = raw_signed_image(tmp_path, k, [])
        _refused(cli("verify", signed, "--key", pub), "k.pub")


@pytest.mark.parametrize("kind", ["dsa", "ed448", "secp256k1"])
def test_keyid_of_unencodable_keys_is_a_refusal(kind):
    with pytest.raises(keys.KeyPolicyError):
        keys.keyid(kind_key(kind).public_key())


# --- class 10: hostile embedded certificates are refusals ------------------------------
def _leaf_der(key, issuer_key, issuer, **kw):
    return any_cert(key, "builder", issuer_key, issuer, **kw).public_bytes(serialization.Encoding.DER)


def _bad_ext(oid):
    return x509.UnrecognizedExtension(oid, b"\x30\x03\x02\x01")        # truncated DER


@pytest.mark.parametrize("where,oid", [
    ("leaf", ExtensionOID.SUBJECT_ALTERNATIVE_NAME), ("leaf", ExtensionOID.CERTIFICATE_POLICIES),
    ("leaf", ExtensionOID.NAME_CONSTRAINTS), ("inter", ExtensionOID.SUBJECT_ALTERNATIVE_NAME),
    ("inter", ExtensionOID.NAME_CONSTRAINTS), ("inter", ExtensionOID.AUTHORITY_KEY_IDENTIFIER),
])
def test_malformed_extension_in_x5c_is_exit_1(cli, tmp_path, site, where, oid):
    rk, root = site
    ik, leaf_key = new_key(), new_key()
    inter = ca_cert(ik, "Site Issuing CA", rk, "Site Root",
                    extensions=[(_bad_ext(oid), False)] if where == "inter" else ())
    leaf = any_cert(leaf_key, "builder", ik, "Site Issuing CA",
                    extensions=[(_bad_ext(oid), False)] if where == "leaf" else ())
    img = raw_signed_image(tmp_path, leaf_key, [leaf, inter])
    _refused(_verify(cli, img, write(tmp_path / "root.pem", pem(root))), "malformed")
    r = cli("verify", img, "--roots", tmp_path / "root.pem", "--json")
    assert r.rc == 1 and json.loads(r.out)["signatures"][0]["status"] == "untrusted"


def _patched(der: bytes, old: str, new: str) -> bytes:
    out = der.replace(bytes.fromhex(old), bytes.fromhex(new))
    assert out != der
    return out


@pytest.mark.parametrize("case,why", [
    ("unknown-signature-algorithm", "unsupported signature algorithm"),
    ("sha1-signature", "SHA1"),
    ("unknown-key-algorithm", "unsupported public key algorithm"),
    ("version-4", "malformed"),
    ("garbage", "malformed"),
])
def test_weird_embedded_leaf_is_exit_1(cli, tmp_path, site, case, why):
    rk, root = site
    ik = new_key()
    inter = ca_cert(ik, "Site Issuing CA", rk, "Site Root")
    leaf_key = rsa.generate_private_key(65537, 2048) if case == "sha1-signature" else new_key()
    issuer_key = rsa.generate_private_key(65537, 2048) if case == "sha1-signature" else ik
    der = _leaf_der(leaf_key, issuer_key, "Site Issuing CA")
    if case == "unknown-signature-algorithm":
        der = _patched(der, "06082A8648CE3D040302", "06082A8648CE3D040309")
    elif case == "sha1-signature":        # sha256WithRSAEncryption -> sha1WithRSAEncryption
        der = _patched(der, "06092A864886F70D01010B", "06092A864886F70D010105")
    elif case == "unknown-key-algorithm":
        der = _patched(der, "06072A8648CE3D0201", "06072A8648CE3D0209")
    elif case == "version-4":
        i = der.index(b"\xa0\x03\x02\x01\x02")
        der = der[:i + 4] + b"\x03" + der[i + 5:]
    else:
        der = b"\x30\x82\x01\x00" + b"\x00" * 40
    img = raw_signed_image(tmp_path, leaf_key, [der, inter],
                           keyid=keys.keyid(leaf_key.public_key()))
    _refused(_verify(cli, img, write(tmp_path / "root.pem", pem(root))), why)
    r = cli("inspect", img, "--json")                              # describing it is no crash either
    assert r.rc == 0 and json.loads(r.out)["signatures"][0]["entries"], r


def test_malformed_operator_certificate_is_bad_input(cli, tmp_path, site):
    k = new_key()
    bad = any_cert(k, "bad", k, "bad", extensions=[(_bad_ext(ExtensionOID.SUBJECT_ALTERNATIVE_NAME), False)])
    r = cli("verify", __import__("chain_images").ONE_GROUP, "--roots", write(tmp_path / "r.pem", pem(bad)))
    assert r.rc == 2 and "malformed" in r.err and r.err.strip().count("\n") == 0, r


# --- class 10: nameConstraints ----------------------------------------------------------
def _dn(**attrs):
    oids = {"C": NameOID.COUNTRY_NAME, "O": NameOID.ORGANIZATION_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
            "CN": NameOID.COMMON_NAME, "E": NameOID.EMAIL_ADDRESS}
    return x509.Name([x509.NameAttribute(oids[k.rstrip("_")], v) for k, v in attrs.items()])


HPC = _dn(C="DE", O="HPC Site")
NC_CASES = [
    # (permitted, excluded, leaf subject, leaf SANs, expected problem or None)
    ([x509.DirectoryName(HPC)], None, _dn(C="DE", O="HPC Site", CN="builder"), [], None),
    ([x509.DirectoryName(HPC)], None, _dn(C="DE", O="hpc  site", CN="builder"), [], None),
    ([x509.DirectoryName(HPC)], None, _dn(C="DE", O="Evil", CN="builder"), [], "outside the permitted"),
    (None, [x509.DirectoryName(HPC)], _dn(C="DE", O="HPC Site", CN="x"), [], "excluded subtree"),
    (None, [x509.DirectoryName(HPC)], _dn(C="DE", O="Other", CN="x"), [], None),
    ([x509.RFC822Name(".example.org")], None, _dn(CN="b"), [x509.RFC822Name("b@hpc.example.org")], None),
    ([x509.RFC822Name(".example.org")], None, _dn(CN="b"), [x509.RFC822Name("b@example.org")], "outside"),
    ([x509.RFC822Name("example.org")], None, _dn(CN="b"), [x509.RFC822Name("b@example.org")], None),
    ([x509.RFC822Name("example.org")], None, _dn(CN="b"), [x509.RFC822Name("b@evil.com")], "outside"),
    ([x509.RFC822Name("example.org")], None, _dn(CN="b", E="b@evil.com"), [], "outside"),
    (None, [x509.RFC822Name("evil.org")], _dn(CN="b"), [x509.RFC822Name("B@EVIL.org")], "excluded"),
    (None, [x509.RFC822Name("boss@hpc.org")], _dn(CN="b"), [x509.RFC822Name("Boss@HPC.org")], "excluded"),
    (None, [x509.RFC822Name("evil.org")], _dn(CN="b"), [x509.RFC822Name("b@hpc.org")], None),
    ([x509.DNSName("example.org")], None, _dn(CN="b"), [x509.DNSName("build.example.org")], None),
    ([x509.DNSName("example.org")], None, _dn(CN="b"), [x509.DNSName("evilexample.org")], "outside"),
    ([x509.DNSName("example.org")], None, _dn(CN="b"), [x509.DNSName("*.example.org")], "cannot compare"),
    ([x509.UniformResourceIdentifier(".example.org")], None, _dn(CN="b"),
     [x509.UniformResourceIdentifier("https://ci.example.org/job")], None),
    ([x509.UniformResourceIdentifier(".example.org")], None, _dn(CN="b"),
     [x509.UniformResourceIdentifier("https://ci.evil.org/job")], "outside"),
    ([x509.UniformResourceIdentifier(".example.org")], None, _dn(CN="b"),
     [x509.UniformResourceIdentifier("urn:uuid:1234")], "no host"),
    (None, [x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))], _dn(CN="b"),
     [x509.IPAddress(ipaddress.ip_address("10.1.2.3"))], "excluded"),
    (None, [x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x01a")], _dn(CN="b"),
     [x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x01b")], "not supported"),
    (None, [x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x01a")], _dn(CN="b"),
     [x509.RFC822Name("b@hpc.org")], None),
]


@pytest.mark.parametrize("critical", [True, False], ids=["critical", "non-critical"])
@pytest.mark.parametrize("permitted,excluded,subject,sans,problem", NC_CASES)
def test_name_constraints(site, critical, permitted, excluded, subject, sans, problem):
    rk, root = site
    ik = new_key()
    nc = x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=excluded)
    inter = ca_cert(ik, "Site Issuing CA", rk, "Site Root", extensions=[(nc, critical)])
    leaf = any_cert(new_key(), subject, ik, "Site Issuing CA", sans=sans)
    if problem is None:
        assert len(build_path(leaf, [inter], [root])) == 3
    else:
        with pytest.raises(ChainError, match=f"violates the name constraints of CA 'Site Issuing CA'.*{problem}"):
            build_path(leaf, [inter], [root])


def test_name_constraints_bind_intermediates_below_and_the_anchor(site):
    rk, root = site
    k1, k2 = new_key(), new_key()
    nc = x509.NameConstraints(permitted_subtrees=[x509.DirectoryName(HPC)], excluded_subtrees=None)
    upper = ca_cert(k1, "Upper", rk, "Site Root", extensions=[(nc, False)])
    lower = any_cert(k2, _dn(C="DE", O="Elsewhere", CN="Lower"), k1, "Upper", ca=True)
    leaf = any_cert(new_key(), _dn(C="DE", O="HPC Site", CN="b"), k2, lower.subject)
    with pytest.raises(ChainError, match="'Lower' violates the name constraints of CA 'Upper'"):
        build_path(leaf, [lower, upper], [root])
    # constraints on a root from the site's own trust file apply as well
    ak = new_key()
    anchor = ca_cert(ak, "Constrained Root", ak, "Constrained Root", extensions=[(nc, True)])
    leaf2 = any_cert(new_key(), _dn(C="DE", O="Evil", CN="b"), ak, "Constrained Root")
    with pytest.raises(ChainError, match="violates the name constraints of CA 'Constrained Root'"):
        build_path(leaf2, [], [anchor])


@pytest.mark.parametrize("critical", [True, False])
@pytest.mark.parametrize("email,rc", [("builder@hpc.example.org", 0), ("mallory@evil.org", 1)])
def test_name_constraints_cli(cli, tmp_path, site, critical, email, rc):
    rk, root = site
    ik = new_key()
    nc = x509.NameConstraints(permitted_subtrees=[x509.RFC822Name(".example.org")],
                              excluded_subtrees=[x509.RFC822Name("evil.org")])
    inter = ca_cert(ik, "Site Issuing CA", rk, "Site Root", extensions=[(nc, critical)])
    leaf_key = new_key()
    leaf = any_cert(leaf_key, "builder", ik, "Site Issuing CA", sans=[x509.RFC822Name(email)])
    img = signed_image(tmp_path, leaf_key, [leaf, inter])
    r = _verify(cli, img, write(tmp_path / "root.pem", pem(root)))
    assert r.rc == rc, r
    if rc:
        _refused(r, "name constraints", "mallory@evil.org")


def test_image_wide_memo_budget_names_itself(site):
    leaf_key, leaf, cas = cross_signed_loop(4)
    memo = SignatureMemo(max_total=3)
    with pytest.raises(ChainError, match="searches for this image exceeded 3 signature checks"):
        build_path(leaf, cas, [site[1]], memo=memo)
