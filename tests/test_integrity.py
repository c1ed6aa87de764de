"""Signing and verification against the Go reference vectors and real certificates."""
import json
import os
import shutil

import pytest

from conftest import APPT, SYLABS
from pki import SiteChain, key_pem, new_key, write
from sifguard.integrity import dsse
from sifguard.integrity.verify import Trust, verify_image
from sifguard.sif.format import DT_SIGNATURE
from sifguard.sif.image import SifImage
from sifguard.x509 import keys

S = lambda f: os.path.join(SYLABS, f)  # noqa: E731
A = lambda f: os.path.join(APPT, f)    # noqa: E731


# --- byte compatibility with the Go signer ----------------------------------------
@pytest.mark.parametrize("name", ["one-group", "two-groups"])
def test_sign_reproduces_go_vectors_byte_for_byte(tmp_path, cli, name):
    p = tmp_path / f"{name}.sif"
    shutil.copyfile(S(f"{name}.sif"), p)
    r = cli("sign", p, "--key", S("ed25519-private.pem"), "--key", S("rsa-private.pem"))
    assert r.rc == 0, r
    assert p.read_bytes() == open(S(f"{name}-signed-dsse.sif"), "rb").read()


def test_keyids_match_go():
    assert keys.keyid(keys.load_public_key(S("ed25519-public.pem"))) == "SHA256:x6l8ZblpSSXGaPMCzySedWg88BwIFcz8jlPb6el0mFs"
    assert keys.keyid(keys.load_public_key(S("rsa-public.pem"))) == "SHA256:BhCwr7qZulYcOMSl2Jt2DuYHxHNnN6th4NdMqR/PGa4"
    assert keys.keyid(keys.load_public_key(S("ecdsa-public.pem"))) == "SHA256:13cNV0A11AxgIQYCvlDmJlRi0CjRtjnYF47RzrMhlaU"


# --- reference vectors ---------------------------------------------------------
@pytest.mark.parametrize("img", ["one-group-signed-dsse.sif", "two-groups-signed-dsse.sif"])
@pytest.mark.parametrize("key,rc", [("ed25519-public.pem", 0), ("rsa-public.pem", 0), ("ecdsa-public.pem", 1)])
def test_dsse_vectors(cli, img, key, rc):
    assert cli("verify", S(img), "--key", S(key)).rc == rc


@pytest.mark.parametrize("img,kind", [("one-group-signed-pgp.sif", "PGP"), ("two-groups-signed-pgp.sif", "PGP"),
                                      ("one-group-signed-legacy.sif", "legacy"),
                                      ("one-group-signed-legacy-group.sif", "legacy"),
                                      ("one-group-signed-legacy-all.sif", "legacy"),
                                      ("two-groups-signed-legacy.sif", "legacy")])
def test_pgp_and_legacy_are_reported_and_refused(cli, img, kind):
    r = cli("verify", S(img), "--key", S("rsa-public.pem"), "--json")
    assert r.rc == 1
    doc = json.loads(r.out)
    assert doc["verified"] is False and kind.lower() in doc["reason"].lower()
    assert all(s["status"] == "unsupported" for s in doc["signatures"]) and doc["signatures"]


def test_apptainer_vector_with_full_chain(cli):
    r = cli("verify", A("images/one-group-signed-dsse.sif"), "--cert", A("certs/leaf.pem"),
            "--intermediates", A("certs/intermediate.pem"), "--roots", A("certs/root.pem"), "--json")
    assert r.rc == 0, r
    doc = json.loads(r.out)
    signer = [s for s in doc["signatures"] if s["status"] == "verified"][0]["signer"]
    assert signer["subject"] == "CN=leaf,O=Apptainer,C=US" and signer["issuer"].startswith("CN=intermediate")
    assert signer["fingerprint"].startswith("sha256:") and signer["serial"]
    # The envelope's Ed25519 signature has no certificate: reported, not fatal.
    assert any(s["status"] == "untrusted" for s in doc["signatures"])


def test_apptainer_vector_without_intermediate_is_refused(cli):
    r = cli("verify", A("images/one-group-signed-dsse.sif"), "--cert", A("certs/leaf.pem"), "--roots", A("certs/root.pem"))
    assert r.rc == 1 and "trusted root" in r.err


def test_unsigned_and_empty_refused(cli):
    for img in ("one-group.sif", "two-groups.sif", "empty.sif"):
        r = cli("verify", S(img), "--key", S("rsa-public.pem"))
        assert r.rc == 1 and r.err.count("\n") == 1, r


# --- X.509: chain carried in the image ---------------------------------------------
@pytest.fixture
def site(tmp_path):
    return SiteChain(tmp_path)


@pytest.fixture
def signed(tmp_path, site, copy_vector, cli):
    p = copy_vector("apptainer/images/one-group.sif", "signed.sif")
    r = cli("sign", p, "--key", site.key_pem, "--cert", site.bundle_pem)
    assert r.rc == 0, r
    return p


def test_sign_with_chain_verifies_from_roots_alone(cli, site, signed):
    r = cli("verify", signed, "--roots", site.root_pem, "--json")
    assert r.rc == 0, r
    s = json.loads(r.out)["signatures"][0]
    assert s["status"] == "verified" and s["signer"]["email"] == ["builder@hpc.example.org"]
    assert s["signer"]["chain"] == ["CN=builder", "CN=Site Issuing CA", "CN=Site Root"]


def test_chain_member_is_invisible_to_go_layout(signed, site):
    # The envelope keeps Go's members; x5c is an extra per-signature member only.
    with SifImage(signed) as img:
        env = json.loads(img.read_object(img.objects[-1]))
    assert set(env) == {"payloadType", "payload", "signatures"}
    assert set(env["signatures"][0]) == {"keyid", "sig", "x5c"}
    assert len(env["signatures"][0]["x5c"]) == 2


def test_second_signer_keeps_first(cli, tmp_path, site, signed):
    other = SiteChain(tmp_path, cn="other", email="other@elsewhere.org")
    assert cli("sign", signed, "--key", other.key_pem, "--cert", other.bundle_pem).rc == 0
    r = cli("verify", signed, "--roots", site.root_pem, "--json")
    assert r.rc == 0, r
    sts = {s["signer"]["subject"]: s["status"] for s in json.loads(r.out)["signatures"]}
    assert sts == {"CN=builder": "verified", "CN=other": "untrusted"}
    assert cli("verify", signed, "--roots", other.root_pem).rc == 0


def test_foreign_root_refused(cli, tmp_path, signed):
    foreign = SiteChain(tmp_path, cn="foreign")
    r = cli("verify", signed, "--roots", foreign.root_pem)
    assert r.rc == 1 and "trusted root" in r.err


@pytest.mark.parametrize("kw,msg", [
    ({"eku": ()}, "codeSigning"),
    ({"digital_signature": False}, "digitalSignature"),
    ({"days": 1, "start": __import__("pki").NOW - __import__("datetime").timedelta(days=3)}, "expired"),
])
def test_unusable_leaf_refused(cli, tmp_path, copy_vector, kw, msg):
    c = SiteChain(tmp_path, cn="bad", **kw)
    p = copy_vector("apptainer/images/one-group.sif")
    assert cli("sign", p, "--key", c.key_pem, "--cert", c.bundle_pem).rc == 0
    r = cli("verify", p, "--roots", c.root_pem)
    assert r.rc == 1 and msg in r.err, r


def test_cert_not_matching_key_is_bad_input(cli, tmp_path, site, copy_vector):
    p = copy_vector("apptainer/images/one-group.sif")
    r = cli("sign", p, "--key", A("keys/rsa-private.pem"), "--cert", site.bundle_pem)
    assert r.rc == 2 and "does not match" in r.err
    assert open(p, "rb").read() == open(A("images/one-group.sif"), "rb").read()


def test_swapped_chain_cannot_make_untrusted_pass(tmp_path, site, signed):
    """Rewrite the embedded x5c with an attacker's chain: trust still comes from roots."""
    evil = SiteChain(tmp_path, cn="evil")
    with SifImage(signed) as img:
        so = img.objects[-1]
        env = dsse.decode(img.read_object(so))
    from cryptography.hazmat.primitives import serialization
    swapped = dsse.Envelope(env.payload_type, env.payload, tuple(
        dsse.EnvelopeSignature(s.keyid, s.sig, (evil.leaf.public_bytes(serialization.Encoding.DER),)) for s in env.signatures))
    with SifImage(signed, writable=True) as img:
        img.remove(so.id)
        img.append(__import__("sifguard.sif.image", fromlist=["NewObject"]).NewObject(
            DT_SIGNATURE, data=swapped.encode(), linked_id=so.linked_id, extra=so.extra))
    with SifImage(signed) as img:
        assert not verify_image(img, Trust(roots=(site.root,))).verified
        assert not verify_image(img, Trust(roots=(evil.root,))).verified


# --- signer-aware verification -------------------------------------------------------
def test_trusted_key_with_bad_signature_is_refusal(tmp_path, copy_vector):
    p = copy_vector("sylabs-sif/one-group-signed-dsse.sif")
    with SifImage(p) as img:
        so = img.objects[-1]
    raw = bytearray(open(p, "rb").read())
    env = json.loads(raw[so.offset:so.offset + so.size])
    sig = bytearray(__import__("base64").b64decode(env["signatures"][1]["sig"]))
    sig[10] ^= 1
    new = __import__("base64").b64encode(bytes(sig)).decode()
    raw = raw.replace(env["signatures"][1]["sig"].encode(), new.encode())
    open(p, "wb").write(raw)
    with SifImage(p) as img:
        ed = keys.load_public_key(S("ed25519-public.pem"))
        rsa_ = keys.load_public_key(S("rsa-public.pem"))
        assert verify_image(img, Trust(keys=(ed,))).verified          # RSA entry: not our key
        rep = verify_image(img, Trust(keys=(ed, rsa_)))
        assert not rep.verified and "does not verify with the trusted key" in rep.reason


# --- tampering -------------------------------------------------------------------
def _descr(b, i):
    return 4096 + i * 585


def _flip(path, offset):
    b = bytearray(open(path, "rb").read())
    b[offset] ^= 0x01
    open(path, "wb").write(bytes(b))


def _objs(path):
    with SifImage(path) as img:
        return img.objects


@pytest.mark.parametrize("where", ["launch", "uuid", "name0", "name1", "extra0", "extra1", "data0", "data1",
                                   "created1", "size-by-one", "linked", "sig-payload", "sig-sig", "sig-keyid"])
def test_tamper_refused(cli, site, signed, where):
    objs = _objs(signed)
    o0, o1, so = objs[0], objs[1], objs[-1]
    env = open(signed, "rb").read()[so.offset:so.offset + so.size]
    off = {
        "launch": 5, "uuid": 50,
        "name0": _descr(None, 0) + 73, "name1": _descr(None, 1) + 73 + 127,
        "extra0": _descr(None, 0) + 201, "extra1": _descr(None, 1) + 201 + 300,
        "data0": o0.offset, "data1": o1.offset + o1.size - 1,
        "created1": _descr(None, 1) + 41, "size-by-one": _descr(None, 1) + 25,
        "linked": _descr(None, 0) + 13,
        "sig-payload": so.offset + env.index(b'"payload":"') + 30,
        "sig-sig": so.offset + env.index(b'"sig":"') + 20,
        "sig-keyid": so.offset + env.index(b'"keyid":"SHA256:') + 20,
    }[where]
    _flip(signed, off)
    r = cli("verify", signed, "--roots", site.root_pem)
    assert r.rc == 1, (where, r)


@pytest.mark.parametrize("where", ["modified-hdr", "modified-descr", "arch", "sig-descr-name", "created-hdr"])
def test_uncovered_fields_still_verify(cli, site, signed, where):
    off = {"modified-hdr": 72, "created-hdr": 64, "arch": 46,
           "modified-descr": _descr(None, 0) + 49,
           "sig-descr-name": _descr(None, 2) + 73}[where]
    _flip(signed, off)
    assert cli("verify", signed, "--roots", site.root_pem).rc == 0


def test_ungrouped_object_refused(cli, site, signed):
    from sifguard.sif.image import NewObject
    with SifImage(signed, writable=True) as img:
        img.append(NewObject(0x4007, data=b"smuggled"))
    r = cli("verify", signed, "--roots", site.root_pem)
    assert r.rc == 1 and "not in any object group" in r.err


def test_extra_object_in_signed_group_refused(cli, site, signed):
    from sifguard.sif.image import NewObject
    with SifImage(signed, writable=True) as img:
        img.append(NewObject(0x4007, data=b"smuggled", group=1))
    r = cli("verify", signed, "--roots", site.root_pem)
    assert r.rc == 1 and "not covered" in r.err


# --- keys ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ec-p256", "ec-p384", "rsa", "ed25519"])
def test_all_key_types_sign_and_verify(tmp_path, copy_vector, cli, kind):
    k = new_key(kind)
    kp = write(tmp_path / "k.pem", key_pem(k), 0o600)
    from cryptography.hazmat.primitives import serialization
    pub = write(tmp_path / "k.pub", k.public_key().public_bytes(serialization.Encoding.PEM,
                                                               serialization.PublicFormat.SubjectPublicKeyInfo))
    p = copy_vector("apptainer/images/busybox_amd64.sif")
    assert cli("sign", p, "--key", kp).rc == 0
    r = cli("verify", p, "--key", pub, "--json")
    assert r.rc == 0, r
    sigs = json.loads(r.out)["signatures"]
    assert {s["type"] for s in sigs} == {"dsse", "pgp"}   # busybox also carries Apptainer's PGP signature


def test_encrypted_key_passphrase_file_and_env(tmp_path, copy_vector, cli):
    k = new_key("ec-p256")
    kp = write(tmp_path / "enc.pem", key_pem(k, b"s3cret pass"), 0o600)
    pf = write(tmp_path / "pass", b"s3cret pass\n", 0o600)
    p = copy_vector("apptainer/images/one-group.sif")
    r = cli("sign", p, "--key", kp)
    assert r.rc == 2 and "encrypted" in r.err
    assert cli("sign", p, "--key", kp, "--passphrase-file", pf).rc == 0
    assert cli("sign", p, "--key", kp, "--passphrase-env", "SG_PASS", env={"SG_PASS": "s3cret pass"}).rc == 0
    r = cli("sign", p, "--key", kp, "--passphrase-env", "SG_PASS", env={"SG_PASS": "wrong"})
    assert r.rc == 2 and "passphrase" in r.err


def test_verify_json_contract(cli, site, signed):
    doc = json.loads(cli("verify", signed, "--roots", site.root_pem, "--json").out)
    assert {"verified", "reason", "signatures"} <= set(doc)
    assert {"group", "status", "algorithm", "signer"} <= set(doc["signatures"][0])


def test_inspect(cli, site, signed):
    r = cli("inspect", signed, "--json")
    doc = json.loads(r.out)
    assert doc["groups"] == [1] and doc["signatures"][0]["entries"][0]["subject"] == "CN=builder"
    r = cli("inspect", signed)
    assert r.rc == 0 and "CN=builder" in r.out


@pytest.mark.parametrize("args,rc", [
    (["verify", "/nonexistent.sif", "--key", S("rsa-public.pem")], 2),
    (["verify", S("one-group.sif")], 2),
    (["verify", S("one-group.sif"), "--key", S("rsa-private.pem")], 2),
    (["verify", S("one-group.sif"), "--key", S("rsa-public.pem"), "--roots", A("certs/root.pem")], 2),
    (["inspect", SYLABS], 2),
    (["frobnicate"], 2),
    (["sign", S("one-group.sif")], 2),
])
def test_bad_input_exit_2_one_line(cli, args, rc):
    r = cli(*args)
    assert r.rc == rc and r.err.strip().count("\n") == 0 and r.err.strip(), r


def test_demo(cli, tmp_path):
    r = cli("demo", "--dir", tmp_path / "d")
    assert r.rc == 0 and "VERIFIED" in r.out and "REFUSED" in r.out
    assert os.stat(tmp_path / "d" / "builder.key").st_mode & 0o777 == 0o600


def test_progress_bar_only_on_a_terminal(monkeypatch, capsys):
    from sifguard.cli import common
    monkeypatch.setattr(common.sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(common, "image_size", lambda size: size)   # "images" given by their size here
    bar = common.ProgressBar(300 << 20, "hashing")
    assert bar.enabled
    for _ in range(300):
        bar(1 << 20)
    err = capsys.readouterr().err
    assert "hashing [" in err and "100.0%" in err and err.endswith("\n")
    assert not common.ProgressBar(100 << 20, "small").enabled        # under 256 MiB: no bar
    monkeypatch.setattr(common.sys.stderr, "isatty", lambda: False, raising=False)
    assert not common.ProgressBar(300 << 20, "piped").enabled


def test_progress_bar_pty_end_to_end(tmp_path):
    """A real terminal on stderr (pty) and a 300 MiB image: the bar is drawn while hashing."""
    import pty
    import subprocess
    import sys
    from sifguard.sif.image import NewObject, create
    part = tmp_path / "p.bin"
    with open(part, "wb") as f:
        f.truncate(300 << 20)
    img = str(tmp_path / "big.sif")
    create(img, [NewObject(0x4004, path=str(part), group=1, extra=b"\x01\0\0\0\x03\0\0\x0002\0")])
    k = new_key("ed25519")
    kp = write(tmp_path / "k.pem", key_pem(k), 0o600)
    master, slave = pty.openpty()
    p = subprocess.run([sys.executable, "-m", "sifguard", "sign", img, "--key", kp], stderr=slave,
                       stdout=subprocess.PIPE, timeout=120)
    os.close(slave)
    out = b""
    try:
        while True:
            chunk = os.read(master, 65536)
            if not chunk:
                break
            out += chunk
    except OSError:
        pass
    os.close(master)
    assert p.returncode == 0 and b"hashing [" in out and b"100.0%" in out


def test_keyidless_foreign_signature_is_untrusted_not_invalid(tmp_path, copy_vector):
    """A signature without keyid names no key: failing against ours is not a forgery of ours."""
    from sifguard.integrity.metadata import DigestCache, image_metadata
    from sifguard.sif.format import GROUP_MASK, signature_extra
    from sifguard.sif.image import NewObject
    p = copy_vector("sylabs-sif/one-group-signed-dsse.sif")
    other = new_key("ec-p256")
    with SifImage(p, writable=True) as img:
        payload = image_metadata(img, img.group_objects(1), DigestCache(img)).encode()
        pae = dsse.pae(dsse.PAYLOAD_TYPE, payload)
        env = dsse.Envelope(dsse.PAYLOAD_TYPE, payload, (dsse.EnvelopeSignature("", keys.sign(other, pae)),))
        img.append(NewObject(DT_SIGNATURE, data=env.encode(), linked_id=1 | GROUP_MASK, extra=signature_extra()))
    with SifImage(p) as img:
        rep = verify_image(img, Trust(keys=(keys.load_public_key(S("ed25519-public.pem")),)))
    assert rep.verified and any(s.status == "untrusted" and s.keyid == "" for s in rep.signatures)
