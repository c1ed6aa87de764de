"""RFC 3161 time-stamps: signatures that outlive their certificates.

Real parts only: SIF images (the Apptainer/sylabs vectors), certificates made with
cryptography's builders, tokens made by `openssl ts -reply` acting as a TSA (tests/tsa_peers.py,
served over HTTP on 127.0.0.1 to the real `sifguard sign --tsa`), and `openssl ts -verify`
as an independent checker of the tokens sifguard stores."""
import datetime as dt
import hashlib
import json
import os
import subprocess
import time

import pytest

from pki import SiteChain, write
from tsa_peers import OpensslTsa

from sifguard.integrity import dsse
from sifguard.sif.image import SifImage


def utcnow():
    return dt.datetime.now(dt.timezone.utc)


def envelope_entries(path):
    """[(signature object id, EnvelopeSignature)] of every DSSE entry in the image."""
    out = []
    with SifImage(path) as img:
        for d in img.objects:
            if d.is_signature:
                kind, env = dsse.classify(img.read_object(d))
                if env is not None:
                    out += [(d.id, e) for e in env.signatures]
    return out


def verify_json(cli, path, *args):
    r = cli("verify", path, "--json", *args)
    assert r.rc in (0, 1), r
    return r.rc, json.loads(r.out)


@pytest.fixture
def site(tmp_path):
    return SiteChain(tmp_path)


@pytest.fixture
def tsa(tmp_path, site):
    t = OpensslTsa(tmp_path / "tsa", site.int_key, site.inter, chain=(site.inter,))
    url = t.serve()
    t.url = url
    yield t
    t.stop()


def test_sign_with_tsa_stores_a_token_openssl_accepts(tmp_path, cli, site, tsa, copy_vector):
    p = copy_vector("apptainer/images/one-group.sif", "ts.sif")
    r = cli("sign", p, "--key", site.key_pem, "--cert", site.bundle_pem, "--tsa", tsa.url)
    assert r.rc == 0 and "time-stamped by" in r.out, r
    [(_, e)] = envelope_entries(p)
    assert len(e.timestamps) == 1
    # openssl, independently: the token is over SHA-256 of this entry's signature value
    tok = write(tmp_path / "tok.der", e.timestamps[0])
    v = subprocess.run(["openssl", "ts", "-verify", "-digest", hashlib.sha256(e.sig).hexdigest(), "-token_in",
                        "-in", tok, "-CAfile", site.root_pem, "-untrusted", site.inter_pem],
                       capture_output=True, text=True)
    assert "Verification: OK" in v.stdout, v
    rc, rep = verify_json(cli, p, "--roots", site.root_pem)
    assert rc == 0
    s = rep["signatures"][0]
    assert s["time"]["basis"] == "timestamp" and s["time"]["tsa"] == "CN=Test TSA"
    assert s["timestamps"][0]["status"] == "valid"
    gen = dt.datetime.strptime(s["time"]["gen_time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    assert abs((gen - utcnow()).total_seconds()) < 120


def test_token_member_changes_nothing_else(tmp_path, cli, tsa, copy_vector):
    """Deterministic vector + Ed25519 (deterministic signatures): with and without --tsa the
    images differ only in the signature object's bytes (and the sizes that follow from it),
    and the envelopes only in the rfc3161 member."""
    key = os.path.join(os.path.dirname(__file__), "data", "sylabs-sif", "ed25519-private.pem")
    a = copy_vector("sylabs-sif/one-group.sif", "a.sif")
    b = copy_vector("sylabs-sif/one-group.sif", "b.sif")
    assert cli("sign", a, "--key", key).rc == 0
    assert cli("sign", b, "--key", key, "--tsa", tsa.url).rc == 0
    [(ia, ea)] = envelope_entries(a)
    [(ib, eb)] = envelope_entries(b)
    assert ia == ib and ea.sig == eb.sig and ea.keyid == eb.keyid and not ea.timestamps and eb.timestamps
    with SifImage(a) as x, SifImage(b) as y:
        sa, sb = x.object(ia), y.object(ib)
        da, db = x.read_object(sa), y.read_object(sb)
        for d in x.objects:
            if d.id != ia:
                assert x.read_object(d) == y.read_object(y.object(d.id))
                assert d.pack() == y.object(d.id).pack()
    ja, jb = json.loads(da), json.loads(db)
    del jb["signatures"][0]["rfc3161"]
    assert ja == jb
    with open(a, "rb") as f:
        head_a = f.read(sa.offset)
    with open(b, "rb") as f:
        head_b = f.read(sb.offset)
    # header: data size differs by the token's size; descriptor of the signature: size fields
    assert len(head_a) == len(head_b)
    diff = [i for i in range(len(head_a)) if head_a[i] != head_b[i]]
    allowed = set(range(120, 128))                               # header data_size
    slot = 4096 + (ia - 1) * 585
    allowed |= set(range(slot + 25, slot + 41))                   # descriptor size, size with padding
    assert set(diff) <= allowed, diff[:10]


@pytest.fixture
def short_lived(tmp_path):
    """A signer whose certificate expires 4 s from now (then one sleep serves every image)."""
    start = utcnow() - dt.timedelta(hours=1)
    return SiteChain(tmp_path, cn="shortlived", start=start, days=(3600 + 4) / 86400)


def _wait_expired(c):
    left = (c.leaf.not_valid_after_utc - utcnow()).total_seconds()
    if left > -1:
        time.sleep(left + 1.2)


def test_expiry_after_signing(tmp_path, cli, short_lived, copy_vector):
    s = short_lived
    tsa = OpensslTsa(tmp_path / "tsa", s.int_key, s.inter, chain=(s.inter,))
    url = tsa.serve()
    other = SiteChain(tmp_path, cn="elsewhere")         # a TSA nobody here trusts
    foreign = OpensslTsa(tmp_path / "tsa2", other.int_key, other.inter, chain=(other.inter,))
    furl = foreign.serve()
    try:
        stamped = copy_vector("apptainer/images/one-group.sif", "stamped.sif")
        plain = copy_vector("apptainer/images/one-group.sif", "plain.sif")
        untrusted = copy_vector("apptainer/images/one-group.sif", "untrusted.sif")
        assert cli("sign", stamped, "--key", s.key_pem, "--cert", s.bundle_pem, "--tsa", url).rc == 0
        assert cli("sign", plain, "--key", s.key_pem, "--cert", s.bundle_pem).rc == 0
        assert cli("sign", untrusted, "--key", s.key_pem, "--cert", s.bundle_pem, "--tsa", furl).rc == 0
        # before expiry all three verify
        for p in (stamped, plain, untrusted):
            assert cli("verify", p, "--roots", s.root_pem).rc == 0
        _wait_expired(s)
        rc, rep = verify_json(cli, stamped, "--roots", s.root_pem)
        assert rc == 0, rep
        t = rep["signatures"][0]["time"]
        assert t["basis"] == "timestamp" and t["gen_time"]
        r = cli("verify", stamped, "--roots", s.root_pem)
        assert "judged at genTime" in r.out
        rc, rep = verify_json(cli, plain, "--roots", s.root_pem)
        assert rc == 1 and "expired" in rep["reason"] and "no time-stamp token" in rep["reason"]
        rc, rep = verify_json(cli, untrusted, "--roots", s.root_pem)
        assert rc == 1 and "TSA not trusted" in rep["reason"] and "expired" in rep["reason"]
        # a site that trusts that TSA's root for time-stamps
        rc, rep = verify_json(cli, untrusted, "--roots", s.root_pem, "--tsa-roots", other.root_pem)
        assert rc == 0 and rep["signatures"][0]["time"]["basis"] == "timestamp"
        # the TSA roots are only for time-stamps: they make no signer trusted
        rc, rep = verify_json(cli, stamped, "--roots", other.root_pem, "--tsa-roots", s.root_pem)
        assert rc == 1
        # and an expired certificate cannot be time-stamped after the fact
        r = cli("timestamp", plain, "--tsa", url)
        assert r.rc == 1 and "expired" in r.err and len(r.err.strip().splitlines()) == 1
    finally:
        tsa.stop()
        foreign.stop()


def test_token_over_another_signature_does_not_count(tmp_path, site, tsa, copy_vector):
    """Move a valid token to another signature's entry: imprint mismatch, judged at now."""
    from sifguard.integrity.verify import Trust, verify_image
    p = copy_vector("apptainer/images/one-group.sif", "moved.sif")
    from sifguard.integrity.sign import Signer, sign_image
    sign_image(p, [Signer(site.leaf_key, (site.leaf, site.inter))], stamp=lambda sig: tsa.token(b"another" + sig))
    later = utcnow() + dt.timedelta(days=40)            # the leaf (30 days) has expired by then
    with SifImage(p) as img:
        rep = verify_image(img, Trust(roots=(site.root,), at=later))
    s = rep.signatures[0]
    assert not rep.verified and s.time_basis == "now"
    assert "over another signature" in s.timestamps[0]["reason"]
    assert "expired" in rep.reason
    with SifImage(p) as img:
        rep = verify_image(img, Trust(roots=(site.root,)))
    assert rep.verified and rep.signatures[0].time_basis == "now"


def test_library_expiry_matrix(tmp_path, site, tsa, copy_vector):
    """Verifier clock moved forward instead of sleeping: genTime inside the leaf's life."""
    from sifguard.integrity.sign import Signer, sign_image
    from sifguard.integrity.verify import Trust, verify_image
    p = copy_vector("apptainer/images/one-group.sif", "m.sif")
    sign_image(p, [Signer(site.leaf_key, (site.leaf, site.inter))], stamp=tsa.token)
    cases = [
        (utcnow(), True, "timestamp"),                                  # now: valid either way
        (utcnow() + dt.timedelta(days=40), True, "timestamp"),          # leaf expired; TSA cert expired too
        (utcnow() + dt.timedelta(days=4000), True, "timestamp"),        # root expired as well: genTime decides
    ]
    for at, ok, basis in cases:
        with SifImage(p) as img:
            rep = verify_image(img, Trust(roots=(site.root,), at=at))
        assert rep.verified is ok, (at, rep.reason)
        assert rep.signatures[0].time_basis == basis
    with SifImage(p) as img:       # tokens disregarded: judged at now
        rep = verify_image(img, Trust(roots=(site.root,), at=utcnow() + dt.timedelta(days=40), timestamps=False))
    assert not rep.verified and "expired" in rep.reason


def test_timestamp_command_adds_tokens_in_place(tmp_path, cli, site, tsa, copy_vector):
    p = copy_vector("apptainer/images/one-group.sif", "later.sif")
    assert cli("sign", p, "--key", site.key_pem, "--cert", site.bundle_pem).rc == 0
    with SifImage(p) as img:
        before = {d.id: img.read_object(d) for d in img.objects if not d.is_signature}
        descs = {d.id: d.pack() for d in img.objects if not d.is_signature}
    [(old_id, e0)] = envelope_entries(p)
    r = cli("timestamp", p, "--tsa", tsa.url)
    assert r.rc == 0 and "time-stamped CN=builder" in r.out, r
    [(new_id, e1)] = envelope_entries(p)
    assert e1.sig == e0.sig and len(e1.timestamps) == 1 and new_id != old_id
    with SifImage(p) as img:
        assert {d.id: img.read_object(d) for d in img.objects if not d.is_signature} == before
        assert {d.id: d.pack() for d in img.objects if not d.is_signature} == descs
    rc, rep = verify_json(cli, p, "--roots", site.root_pem)
    assert rc == 0 and rep["signatures"][0]["time"]["basis"] == "timestamp"
    # again: a second token (e.g. from a second TSA) is added beside the first
    assert cli("timestamp", p, "--tsa", tsa.url).rc == 0
    [(_, e2)] = envelope_entries(p)
    assert len(e2.timestamps) == 2 and e2.timestamps[0] == e1.timestamps[0]
    rc, rep = verify_json(cli, p, "--roots", site.root_pem)
    assert rc == 0 and [t["status"] for t in rep["signatures"][0]["timestamps"]] == ["valid", "valid"]


@pytest.mark.parametrize("case", ["refused-connection", "not-a-tsa", "wrong-group"])
def test_tsa_failures_leave_the_image_untouched(tmp_path, cli, site, tsa, copy_vector, case):
    from conftest import free_port
    p = copy_vector("apptainer/images/one-group.sif", "u.sif")
    assert cli("sign", p, "--key", site.key_pem, "--cert", site.bundle_pem).rc == 0
    with open(p, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    url = {"refused-connection": f"http://127.0.0.1:{free_port()}/tsa",
           "not-a-tsa": "http://127.0.0.1:1/",
           "wrong-group": tsa.url}[case]
    extra = ["--group-id", "7"] if case == "wrong-group" else []
    for args in (["timestamp", p, "--tsa", url, "--tsa-timeout", "2", *extra],
                 ["sign", p, "--key", site.key_pem, "--cert", site.bundle_pem, "--tsa", url, "--tsa-timeout", "2",
                  *extra]):
        r = cli(*args)
        assert r.rc == 2 and len(r.err.strip().splitlines()) == 1, r
        with open(p, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest


def test_tsa_answering_garbage_or_a_foreign_nonce(tmp_path, site, tsa):
    """What the signer checks before it writes anything: status, imprint, nonce."""
    from sifguard.tsp import request
    q = request.request(b"sig")
    good = tsa.reply(q.der)
    assert request.read_reply(good, q)
    other = request.request(b"sig")                      # same message, another nonce
    with pytest.raises(request.TsaError, match="nonce"):
        request.read_reply(good, other)
    with pytest.raises(request.TsaError, match="another message"):
        request.read_reply(good, request.Query(q.der, hashlib.sha256(b"x").digest(), q.nonce, None))
    for junk in (b"", b"\x30\x00", os.urandom(300), good[:-5]):
        with pytest.raises(request.TsaError):
            request.read_reply(junk, q)


@pytest.mark.parametrize("ess", ["sha256", "sha1"])
def test_openssl_tokens_with_ess_v1_and_v2(tmp_path, site, ess):
    """openssl writes signingCertificate (v1, SHA-1) or signingCertificateV2: both bind the TSA."""
    from sifguard.tsp import token as T
    t = OpensslTsa(tmp_path / ess, site.int_key, site.inter, chain=(site.inter,), ess=ess)
    tok = T.parse(t.token(b"message"))
    assert tok.ess[0][0] == ess
    tt = T.verify(tok, b"message", [site.root])
    assert tt.tsa_path[0] == t.cert and tt.tsa_path[-1] == site.root


def test_malformed_tokens_are_reasons_not_crashes(tmp_path, site, tsa):
    from sifguard.tsp import token as T
    good = tsa.token(b"m")
    for bad in (b"", b"\x00", os.urandom(64), good[:40], good[:-1], good + b"\x00", b"\x30" + b"\x84\xff\xff\xff\xff"):
        with pytest.raises(T.TimestampError):
            T.verify(T.parse(bad), b"m", [site.root])
    # flip every 7th byte of a good token: never an exception other than TimestampError
    for i in range(0, len(good), 7):
        b = bytearray(good)
        b[i] ^= 0x55
        try:
            T.verify(T.parse(bytes(b)), b"m", [site.root])
        except T.TimestampError:
            pass


@pytest.mark.parametrize("peer", ["trickle", "huge-announced", "huge-streamed", "http-500", "silent"])
def test_hostile_tsa_peers_are_bounded(tmp_path, cli, site, copy_vector, peer):
    """A TSA that trickles, floods, errs or never answers: `sign --tsa` ends by its timeout
    with one line and exit 2, and the image is untouched."""
    import socket
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            def talk(c=c):
                try:
                    c.recv(65536)
                    if peer == "trickle":
                        for b in b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100:
                            if stop.wait(0.5):
                                break
                            c.send(bytes([b]))
                    elif peer == "huge-announced":
                        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 65536)
                    elif peer == "huge-streamed":
                        c.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                        for _ in range(200):
                            c.sendall(b"x" * 65536)
                    elif peer == "http-500":
                        c.sendall(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n")
                    else:
                        stop.wait(30)
                except OSError:
                    pass
                finally:
                    c.close()
            threading.Thread(target=talk, daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    try:
        p = copy_vector("apptainer/images/one-group.sif", "h.sif")
        with open(p, "rb") as f:
            before = hashlib.sha256(f.read()).hexdigest()
        url = f"http://127.0.0.1:{srv.getsockname()[1]}/tsa"
        r = cli("sign", p, "--key", site.key_pem, "--cert", site.bundle_pem, "--tsa", url, "--tsa-timeout", "2",
                timeout=60)
        assert r.rc == 2 and len(r.err.strip().splitlines()) == 1, r
        assert {"trickle": "timeout", "silent": "timeout", "huge-announced": "limit", "huge-streamed": "limit",
                "http-500": "HTTP 500"}[peer] in r.err, r
        with open(p, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == before
    finally:
        stop.set()
        srv.close()


def _repeat_tokens(path, n):
    """The first signature's token list repeated n times, in place (a new signature object)."""
    from dataclasses import replace
    from sifguard.sif.image import NewObject
    with SifImage(path, writable=True) as img:
        so = next(d for d in img.objects if d.is_signature)
        env = dsse.decode(img.read_object(so))
        e = env.signatures[0]
        many = replace(env, signatures=(replace(e, timestamps=e.timestamps * n),))
        img.append(NewObject(datatype=so.datatype, data=many.encode(), linked_id=so.linked_id, extra=so.extra))
        img.remove(so.id, zero=True)


def test_token_counts_are_bounded(tmp_path, site, tsa, copy_vector):
    """12 tokens on one signature: 8 are weighed, the rest reported as ignored; the signature
    still stands on the ones that count. Tokens are weighed only for a signature that verifies."""
    from sifguard.integrity.sign import Signer, sign_image
    from sifguard.integrity.verify import Trust, verify_image
    p = copy_vector("apptainer/images/one-group.sif", "many.sif")
    sign_image(p, [Signer(site.leaf_key, (site.leaf, site.inter))], stamp=tsa.token)
    _repeat_tokens(p, 12)
    with SifImage(p) as img:
        rep = verify_image(img, Trust(roots=(site.root,), at=utcnow() + dt.timedelta(days=40)))
    s = rep.signatures[0]
    assert rep.verified and s.time_basis == "timestamp"
    assert [t["status"] for t in s.timestamps] == ["valid"] * 8 + ["invalid"]
    assert "the rest ignored" in s.timestamps[-1]["reason"]


def test_timestamp_refuses_a_ninth_token(tmp_path, cli, site, tsa, copy_vector):
    """Verification weighs 8 tokens a signature: `timestamp` does not add a 9th it would ignore."""
    from sifguard.integrity.sign import Signer, sign_image
    p = copy_vector("apptainer/images/one-group.sif", "nine.sif")
    sign_image(p, [Signer(site.leaf_key, (site.leaf, site.inter))], stamp=tsa.token)
    _repeat_tokens(p, 8)
    r = cli("timestamp", p, "--tsa", tsa.url)
    assert r.rc == 1 and "already carries 8 time-stamps" in r.err, r
