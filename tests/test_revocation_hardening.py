"""Revocation client hardening (issue 8, classes 6, 7 and 10):

* one deadline per decision and size caps, against hostile HTTP peers on 127.0.0.1 that
  trickle headers or bodies, announce 1.5 GiB, lie in Content-Length, stream an endless
  chunked body, or accept and never answer (or never accept) — for one certificate, a
  two-certificate chain and OCSP + CRL fallback together;
* revocations the node already knows (stale cached OCSP `revoked`, stale CRL listing,
  fresh cached `good` next to a CRL listing; node or shared cache) win over an outage in
  both `enforce` and `soft-fail`;
* a certificate made with the issuing key behind the CA's back is not `good` through the
  real `sifguard ca serve`, and OCSP error statuses split into answers and outages;
* id-pkix-ocsp-nocheck does not exempt a checked certificate.

Elapsed-time bounds here are correctness bounds with generous slack (timeout 1 s must end
well under 4 s; the unbounded client took as long as the peer cared to trickle)."""
import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from conftest import HERE, Server, free_port, issue_and_sign, run_cli
from pki import new_key
from sifguard.enforce.decide import Engine
from sifguard.errors import RefusedError, SifguardError
from sifguard.ocsp.client import Checker, RevocationError
from sifguard.policy.loader import load
from sifguard.policy.model import Revocation, Responder
from test_revocation import Canned  # noqa: E402 - the same canned responder

SLACK = 2.5          # seconds over the deadline that still count as "ended at the deadline"


# --- hostile peers ----------------------------------------------------------------------
class Peer:
    """A raw TCP server on 127.0.0.1 whose behaviour per connection is `self.mode`.
    Every connection thread ends when the peer stops (or after 60 s at most)."""

    def __init__(self, mode="close", accept=True):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.stop_ev = threading.Event()
        self.conns, self.sent, self.requests = [], [], []
        if accept:
            threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop_ev.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _wait(self, seconds):
        return self.stop_ev.wait(seconds)

    def _serve(self, c):
        sent = [0]
        self.sent.append(sent)
        end = time.monotonic() + 60

        def send(b):
            c.sendall(b)
            sent[0] += len(b)
        try:
            c.settimeout(5)
            req = c.recv(65536)
            self.requests.append(req)
            m = self.mode
            if m == "close":
                return
            if m == "hold":                              # accepts, reads, never answers
                self._wait(60)
            elif m == "trickle-headers":                 # a header line that never ends
                for b in b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 1000:
                    if self._wait(0.3) or time.monotonic() > end:
                        return
                    send(bytes([b]))
            elif m == "trickle-body":                    # honest headers, body at 3 bytes/s
                send(b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: 2000\r\n\r\n")
                for _ in range(2000):
                    if self._wait(0.3) or time.monotonic() > end:
                        return
                    send(b"\x00")
            elif m == "huge-announced":                  # 1.5 GiB announced, a few MiB sent, then held
                send(b"HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\n"
                     b"Content-Length: %d\r\n\r\n" % (3 << 29))
                for _ in range(8):
                    send(b"\x00" * (1 << 20))
                self._wait(60)
            elif m == "length-lie-short":                # announces 4000, sends 100, holds
                send(b"HTTP/1.1 200 OK\r\nContent-Length: 4000\r\n\r\n" + b"\x30" * 100)
                self._wait(60)
            elif m == "length-lie-long":                 # announces 10, sends 8 MiB of garbage
                send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
                for _ in range(8):
                    send(b"\x00" * (1 << 20))
            elif m == "chunked-endless":                 # 1 MiB chunks until the client stops reading
                send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                blk = b"100000\r\n" + b"\x00" * (1 << 20) + b"\r\n"
                for _ in range(1024):
                    if self.stop_ev.is_set() or time.monotonic() > end:
                        return
                    send(blk)
            elif m == "gzip-bomb":                       # small on the wire, huge when decoded
                import gzip
                body = gzip.compress(b"\x00" * (64 << 20))
                send(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.stop_ev.set()
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass




# --- sites --------------------------------------------------------------------------------
def _load(path):
    return x509.load_pem_x509_certificate(open(path, "rb").read())


def _key(ca, name):
    return serialization.load_pem_private_key(open(ca / name, "rb").read(), None)


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory):
    """A CA whose URL (AIA OCSP and CRL distribution points of leaf and intermediate) is a
    hostile peer, so OCSP and the CRL fallback meet the same behaviour."""
    d = tmp_path_factory.mktemp("hostile")
    peer = Peer()
    ca = d / "ca"
    assert run_cli("ca", "init", "--ca", ca, "--name", "Hostile Site", "--url", f"http://127.0.0.1:{peer.port}").rc == 0
    leaf, inter = issue_and_sign(ca, d, "alice")
    yield {"d": d, "ca": ca, "peer": peer, "leaf": leaf, "issuer": inter, "root": _load(ca / "root.pem")}
    peer.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A CA with `sifguard ca serve` at its URL (started and stopped by the tests that need it)."""
    d = tmp_path_factory.mktemp("site")
    port = free_port()
    ca = d / "ca"
    assert run_cli("ca", "init", "--ca", ca, "--name", "Hard Site", "--url", f"http://127.0.0.1:{port}",
                   "--ocsp-validity-hours", "1", "--crl-hours", "24").rc == 0
    out = {"d": d, "ca": ca, "port": port, "url": f"http://127.0.0.1:{port}", "root": _load(ca / "root.pem"),
           "root_pem": str(ca / "root.pem")}
    for who in ("alice", "eve", "trudy", "mallory", "oscar", "victor"):
        out[who], out["issuer"] = issue_and_sign(ca, d, who)
    return out


def _checker(tmp_path, **kw):
    kw.setdefault("cache_dir", str(tmp_path / f"cache-{time.monotonic_ns()}"))
    kw.setdefault("timeout", 1)
    kw.setdefault("retries", 1)
    return Checker(Revocation(**kw))


def _timed(fn):
    t = time.monotonic()
    out = fn()
    return out, time.monotonic() - t


# --- class 6: one deadline, bounded bodies ---------------------------------------------------
MODES = ["hold", "trickle-headers", "trickle-body", "huge-announced", "length-lie-short",
         "length-lie-long", "chunked-endless", "gzip-bomb"]


@pytest.mark.parametrize("mode", MODES + ["never-accept", "https-hold"])
def test_one_check_ends_at_the_deadline(hostile_site, tmp_path, mode):
    """OCSP via the certificate's AIA and the CRL fallback via its CRLDP, both hostile
    (never-accept: a listening socket nobody accepts on; https-hold: a TLS handshake that
    never gets its ServerHello)."""
    own = None
    if mode == "never-accept":
        own = Peer(accept=False)
        responders = (Responder("*", own.url),)
    elif mode == "https-hold":
        own = Peer("hold")
        responders = (Responder("*", f"https://127.0.0.1:{own.port}/"),)
    else:
        responders = ()
    hostile_site["peer"].mode = "hold" if own else mode
    try:
        c = _checker(tmp_path, responders=responders, timeout=1, retries=2)
        st, took = _timed(lambda: c.check(hostile_site["leaf"], hostile_site["issuer"]))
    finally:
        if own:
            own.stop()
    assert st.status == "error", st
    assert took < 1 + SLACK, (mode, took, st.reason)
    _no_fetch_left_behind()


def _no_fetch_left_behind():
    """At the deadline the sockets are shut down, so no fetch worker outlives it for long."""
    end = time.monotonic() + SLACK
    while time.monotonic() < end and any(t.name == "sifguard-revocation-fetch" for t in threading.enumerate()):
        time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name == "sifguard-revocation-fetch"]


@pytest.mark.parametrize("mode", ["trickle-headers", "trickle-body", "hold"])
def test_two_certificate_chain_shares_one_deadline(hostile_site, tmp_path, mode):
    hostile_site["peer"].mode = mode
    c = _checker(tmp_path, timeout=1, retries=3)
    path = [hostile_site["leaf"], hostile_site["issuer"], hostile_site["root"]]
    sts, took = _timed(lambda: c.check_path(path))
    assert [s.status for s in sts] == ["error", "error"], sts
    assert took < 1 + SLACK, took
    # the same with an explicit deadline, and with a budget around separate checks
    sts, took = _timed(lambda: c.check_path(path, deadline=time.monotonic() + 1))
    assert took < 1 + SLACK and all(s.status == "error" for s in sts)

    def two():
        with c.budget(1):
            return [c.check(path[0], path[1]), c.check(path[1], path[2])]
    sts, took = _timed(two)
    assert took < 1 + SLACK and all(s.status == "error" for s in sts), (took, sts)
    _no_fetch_left_behind()


def test_expired_deadline_still_uses_the_caches(site, tmp_path):
    """Cache reads need no budget: a known answer is found even with no time left."""
    srv = Server(site["ca"], port=site["port"])
    try:
        c = _checker(tmp_path)
        assert c.check(site["alice"], site["issuer"]).status == "good"
    finally:
        srv.stop()
    st = c.check(site["alice"], site["issuer"], deadline=time.monotonic() - 1)
    assert (st.status, st.source) == ("good", "cache (ocsp)")


def test_silent_responder_leaves_the_crl_fallback_time(site, tmp_path):
    """OCSP never answers; the CRL (from the real `ca serve`) still decides within the budget."""
    silent = Peer("hold")
    srv = Server(site["ca"], port=site["port"])
    try:
        c = _checker(tmp_path, responders=(Responder("*", silent.url),), timeout=2, retries=3)
        st, took = _timed(lambda: c.check(site["alice"], site["issuer"]))
        assert (st.status, st.source) == ("good", "crl"), st
        assert took < 2 + SLACK
        path = [site["alice"], site["issuer"], site["root"]]
        sts = _checker(tmp_path, responders=(Responder("*", silent.url),), timeout=3).check_path(path)
        assert [(s.status, s.source) for s in sts] == [("good", "crl"), ("good", "crl")], sts
    finally:
        srv.stop()
        silent.stop()


def test_body_caps(hostile_site, tmp_path):
    peer = hostile_site["peer"]
    c = _checker(tmp_path, timeout=5, retries=0, crl_fallback=False,
                 responders=(Responder("*", peer.url),))
    peer.mode = "huge-announced"
    st = c.check(hostile_site["leaf"], hostile_site["issuer"])
    assert st.status == "error" and "limit" in st.reason, st
    peer.mode = "chunked-endless"
    peer.sent.clear()
    st = c.check(hostile_site["leaf"], hostile_site["issuer"])
    assert st.status == "error" and "limit" in st.reason, st
    time.sleep(0.5)
    # the client stopped reading at the cap: the peer could push no more than the cap plus
    # what the kernel's socket buffers absorb, far from the 1 GiB it offered
    assert sum(s[0] for s in peer.sent) < 64 << 20, peer.sent


def test_crl_cap_is_configurable(hostile_site, tmp_path):
    peer = hostile_site["peer"]
    peer.mode = "chunked-endless"
    c = _checker(tmp_path, timeout=5, retries=0, responders=(Responder("*", f"http://127.0.0.1:{free_port()}/"),))
    c.crl_max_bytes = 2 << 20
    st = c.check(hostile_site["leaf"], hostile_site["issuer"])
    assert st.status == "error" and "2097152-byte limit" in st.reason, st


def test_memory_stays_bounded_against_a_huge_body(hostile_site, tmp_path):
    """In a fresh interpreter: peak RSS grows by far less than the body offered (1 GiB chunked)."""
    peer = hostile_site["peer"]
    peer.mode = "chunked-endless"
    (tmp_path / "leaf.pem").write_bytes(hostile_site["leaf"].public_bytes(serialization.Encoding.PEM))
    (tmp_path / "issuer.pem").write_bytes(hostile_site["issuer"].public_bytes(serialization.Encoding.PEM))
    prog = textwrap.dedent(f"""
        import resource, sys
        from cryptography import x509
        from sifguard.ocsp.client import Checker
        from sifguard.policy.model import Revocation, Responder
        leaf = x509.load_pem_x509_certificate(open({str(tmp_path / 'leaf.pem')!r}, 'rb').read())
        issuer = x509.load_pem_x509_certificate(open({str(tmp_path / 'issuer.pem')!r}, 'rb').read())
        c = Checker(Revocation(timeout=20, retries=0, cache_dir={str(tmp_path / 'c')!r},
                               responders=(Responder('*', {peer.url!r}),)))
        c.session  # requests imported before the baseline
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        st = c.check(leaf, issuer)
        print(st.status, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
    """)
    p = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=60,
                       cwd=os.path.dirname(HERE))
    assert p.returncode == 0, p.stderr
    status, grown_kib = p.stdout.split()
    assert status == "error" and int(grown_kib) < 96 * 1024, p.stdout


def test_file_crls_only_regular_files_within_the_cap(site, tmp_path):
    """CRL distribution points given as file:// paths: FIFOs, devices, directories and
    oversized files are refused quickly; a regular file (also through a symlink) is read."""
    ikey = _key(site["ca"], "intermediate.key")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.crl"
    with open(big, "wb") as f:
        f.truncate(20 << 20)
    good = tmp_path / "crl.der"
    shutil.copyfile(site["ca"] / "crl.der", good)
    os.symlink(good, tmp_path / "link.der")
    cases = {f"file://{fifo}": "not a regular file", "file:///dev/zero": "not a regular file",
             f"file://{tmp_path}": "not a regular file", f"file://{big}": "limit",
             "file://otherhost/etc/crl.der": "local absolute", str(fifo): "not a regular file"}
    for url, why in cases.items():
        leaf = _leaf(site, ikey, crl=[url])
        st, took = _timed(lambda: _checker(tmp_path).check(leaf, site["issuer"]))
        assert st.status == "error" and why in st.reason and took < 3, (url, st)
    for url in (f"file://{good}", f"file://{tmp_path / 'link.der'}"):
        leaf = _leaf(site, ikey, crl=[url])
        st = _checker(tmp_path).check(leaf, site["issuer"])
        assert (st.status, st.source) == ("good", "crl"), st


def test_no_proxy_from_the_environment(hostile_site, tmp_path, monkeypatch):
    """A proxy in the environment is not used: the request reaches the responder itself."""
    proxy = Peer("close")
    monkeypatch.setenv("http_proxy", proxy.url)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("ALL_PROXY", proxy.url)
    target = Peer("close")
    try:
        _checker(tmp_path, responders=(Responder("*", target.url),), crl_fallback=False).check(
            hostile_site["leaf"], hostile_site["issuer"])
        time.sleep(0.2)
        assert target.requests and not proxy.requests
    finally:
        proxy.stop()
        target.stop()


def test_revocation_error_is_a_sifguard_error():
    assert issubclass(RevocationError, RefusedError) and issubclass(RevocationError, SifguardError)
    assert RevocationError("x").exit_code == 1


# --- class 7: known revocations win over outages ------------------------------------------
def _leaf(site, ikey, cn="ghost", ocsp_url=None, crl=None, nocheck=False, ca=False, issuer=None, key=None):
    """A certificate signed with the issuing CA's key (by default: made behind its back)."""
    issuer = issuer or site["issuer"]
    k = key or new_key("ec-p256")
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
         .issuer_name(issuer.subject).public_key(k.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=10))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True))
    if not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    if ocsp_url:
        b = b.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
    if crl:
        b = b.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(u) for u in crl], None, None, None)]), critical=False)
    if nocheck:
        b = b.add_extension(x509.OCSPNoCheck(), critical=False)
    return b.sign(ikey, hashes.SHA256())


@pytest.fixture(scope="module")
def known(site, tmp_path_factory):
    """Caches filled from the real `ca serve` (which then goes away for good):
    node: eve's revoked OCSP answer and mallory's fresh good one (taken before her revocation);
    crl_dir: the issuer's CRL listing eve, trudy, mallory and oscar; shared: oscar's revoked
    OCSP answer; both: node plus crl_dir's CRL."""
    d = tmp_path_factory.mktemp("known")
    node, crl_dir, shared = d / "node", d / "crl-only", d / "shared"
    srv = Server(site["ca"], port=site["port"])
    dead = (Responder("*", f"http://127.0.0.1:{free_port()}/"),)
    try:
        ca = site["ca"]
        c = Checker(Revocation(cache_dir=str(node), timeout=3))
        assert c.check(site["mallory"], site["issuer"]).status == "good"
        for who in ("eve", "trudy", "mallory", "oscar"):
            assert run_cli("ca", "revoke", "--ca", ca, "--cert", site["d"] / f"{who}.pem",
                           "--reason", "keyCompromise").rc == 0
        time.sleep(1.0)
        assert c.check(site["eve"], site["issuer"]).status == "revoked"
        assert c.check(site["mallory"], site["issuer"]).source == "cache (ocsp)"     # still the cached good
        assert Checker(Revocation(cache_dir=str(shared), timeout=3)).check(site["oscar"], site["issuer"]).status == "revoked"
        st = Checker(Revocation(cache_dir=str(crl_dir), timeout=3, responders=dead)).check(site["trudy"], site["issuer"])
        assert (st.status, st.source) == ("revoked", "crl"), st
    finally:
        srv.stop()
    assert not os.path.isdir(node / "crl") and not os.path.isdir(crl_dir / "ocsp")
    both = d / "both"
    shutil.copytree(node, both)
    shutil.copytree(crl_dir / "crl", both / "crl")
    return {"node": str(node), "crl_dir": str(crl_dir), "shared": str(shared), "both": str(both)}


LATER = {"ocsp-stale": dt.timedelta(hours=2), "all-stale": dt.timedelta(days=3), "now": dt.timedelta(0)}

# (who, node cache, shared cache, clock, expected source)
KNOWN_CASES = {
    "stale cached revoked OCSP": ("eve", "node", None, "ocsp-stale", "cache (ocsp, stale)"),
    "stale CRL listing": ("trudy", "crl_dir", None, "all-stale", "cache (crl, stale)"),
    "fresh CRL listing": ("trudy", "crl_dir", None, "now", "cache (crl)"),
    "fresh good OCSP + CRL listing, same cache": ("mallory", "both", None, "now", "cache (crl)"),
    "fresh good OCSP + CRL listing in the shared cache": ("mallory", "node", "crl_dir", "now", "cache (crl)"),
    "stale revoked OCSP in the shared cache only": ("oscar", None, "shared", "ocsp-stale", "cache (ocsp, stale)"),
}


def _known_checker(known, tmp_path, node, shared, clock, **kw):
    later = LATER[clock]
    c = Checker(Revocation(cache_dir=known[node] if node else str(tmp_path / "empty"),
                           shared_cache_dir=known[shared] if shared else None, timeout=1, retries=0,
                           responders=(Responder("*", f"http://127.0.0.1:{free_port()}/"),), **kw))
    c.now = lambda: dt.datetime.now(dt.timezone.utc) + later
    return c


@pytest.mark.parametrize("case", KNOWN_CASES)
def test_known_revocation_survives_an_outage(site, known, tmp_path, case):
    who, node, shared, clock, source = KNOWN_CASES[case]
    st = _known_checker(known, tmp_path, node, shared, clock).check(site[who], site["issuer"])
    assert (st.status, st.source) == ("revoked", source), st
    st = _known_checker(known, tmp_path, node, shared, clock, crl_fallback=False).check(site[who], site["issuer"])
    assert st.status == "revoked", st


@pytest.mark.parametrize("mode", ["soft-fail", "enforce"])
@pytest.mark.parametrize("case", KNOWN_CASES)
def test_known_revocation_refused_in_every_mode(site, known, tmp_path, case, mode):
    who, node, shared, clock, _ = KNOWN_CASES[case]
    pol = tmp_path / "p.yaml"
    pol.write_text(f"""
version: 1
trust: {{roots: [{site['root_pem']}]}}
revocation: {{mode: {mode}, timeout: 1, retries: 0}}
cache: {{images: off}}
audit: {{log: {tmp_path / 'audit.jsonl'}}}
""")
    eng = Engine(load(str(pol)), checker=_known_checker(known, tmp_path, node, shared, clock))
    v = eng.decide(str(site["d"] / f"{who}.sif"))
    assert not v.allowed and "revoked" in v.reason, v.reason


@pytest.mark.parametrize("reason,want", [(x509.ReasonFlags.certificate_hold, "error"),
                                         (x509.ReasonFlags.key_compromise, "revoked"),
                                         (x509.ReasonFlags.superseded, "revoked")])
def test_a_stale_hold_is_not_a_known_revocation(site, tmp_path, reason, want):
    """certificateHold may be lifted: it counts while current, not once stale."""
    canned = Canned(lambda req: _signed(site, site["victor"], ocsp.OCSPCertStatus.REVOKED, reason=reason))
    cache = str(tmp_path / "c")
    try:
        st = Checker(Revocation(cache_dir=cache, responders=(Responder("*", canned.url),))).check(
            site["victor"], site["issuer"])
        assert (st.status, st.source) == ("revoked", "ocsp"), st
    finally:
        canned.stop()
    later = Checker(Revocation(cache_dir=cache, timeout=1, crl_fallback=False,
                               responders=(Responder("*", f"http://127.0.0.1:{free_port()}/"),)))
    later.now = lambda: dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=3)
    st = later.check(site["victor"], site["issuer"])
    assert st.status == want, st
    if want == "revoked":
        assert st.source == "cache (ocsp, stale)"


def test_outage_without_knowledge_is_still_an_error(site, known, tmp_path):
    """The control: victor is not revoked and nothing is cached about him."""
    st = _known_checker(known, tmp_path, "node", None, "now").check(site["victor"], site["issuer"])
    assert st.status == "error", st


# --- class 10: unknown to the issuer is not good --------------------------------------------
def test_certificate_unknown_to_the_ca_is_not_good(site, tmp_path):
    """Made with the intermediate key, never recorded by the CA: `ca serve` says unauthorized
    (or a signed unknown); the CRL (which does not list it) must not turn that into good."""
    ikey = _key(site["ca"], "intermediate.key")
    ghost = _leaf(site, ikey, ocsp_url=site["url"] + "/", crl=[site["url"] + "/crl.der"])
    srv = Server(site["ca"], port=site["port"])
    try:
        for kw in ({}, {"nonce": True}, {"crl_fallback": False}):
            st = _checker(tmp_path, timeout=3, **kw).check(ghost, site["issuer"])
            assert st.status == "unknown", (kw, st)      # unauthorized today; a signed unknown is the same
        st = _checker(tmp_path, timeout=3).check(site["victor"], site["issuer"])    # the control
        assert (st.status, st.source) == ("good", "ocsp"), st
    finally:
        srv.stop()


def _signed(site, cert, status, issuer=None, key=None, reason=x509.ReasonFlags.key_compromise):
    issuer = issuer or site["issuer"]
    key = key or _key(site["ca"], "intermediate.key")
    now = dt.datetime.now(dt.timezone.utc)
    rev = (now - dt.timedelta(minutes=5), reason) if status == ocsp.OCSPCertStatus.REVOKED else (None, None)
    return (ocsp.OCSPResponseBuilder()
            .add_response(cert, issuer, hashes.SHA256(), status, now - dt.timedelta(minutes=1),
                          now + dt.timedelta(hours=1), *rev)
            .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer)
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))


def _error(status):
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("status,want", [
    (ocsp.OCSPResponseStatus.UNAUTHORIZED, ("unknown", "ocsp")),            # an answer: no fallback
    (ocsp.OCSPResponseStatus.TRY_LATER, ("good", "crl")),                   # outages: the CRL decides
    (ocsp.OCSPResponseStatus.INTERNAL_ERROR, ("good", "crl")),
    (ocsp.OCSPResponseStatus.SIG_REQUIRED, ("good", "crl")),
    (ocsp.OCSPResponseStatus.MALFORMED_REQUEST, ("good", "crl")),
    ("signed-unknown", ("unknown", "ocsp")),
])
def test_ocsp_error_statuses_answers_and_outages(site, tmp_path, status, want):
    srv = Server(site["ca"], port=site["port"])          # serves the CRL
    canned = Canned(lambda req: _signed(site, site["alice"], ocsp.OCSPCertStatus.UNKNOWN)
                    if status == "signed-unknown" else _error(status))
    try:
        st = _checker(tmp_path, timeout=3, responders=(Responder("*", canned.url),)).check(site["alice"], site["issuer"])
        assert (st.status, st.source) == want, st
        if status == "signed-unknown":
            assert "unknown is not good" in st.reason
    finally:
        canned.stop()
        srv.stop()


def test_unauthorized_for_a_ca_certificate_lets_the_root_crl_decide(site, tmp_path):
    """No OCSP for the root's certificates (e.g. the root key offline): the root CRL decides."""
    srv = Server(site["ca"], port=site["port"])
    canned = Canned(lambda req: _error(ocsp.OCSPResponseStatus.UNAUTHORIZED))
    try:
        st = _checker(tmp_path, timeout=3, responders=(Responder("*", canned.url),)).check(site["issuer"], site["root"])
        assert (st.status, st.source) == ("good", "crl"), st
    finally:
        canned.stop()
        srv.stop()


# --- class 10: id-pkix-ocsp-nocheck ---------------------------------------------------------
def test_ocsp_nocheck_does_not_exempt_a_leaf_or_a_ca(site, tmp_path):
    ikey, rkey = _key(site["ca"], "intermediate.key"), _key(site["ca"], "root.key")
    leaf = _leaf(site, ikey, cn="nocheck leaf", nocheck=True)
    sub = _leaf(site, rkey, cn="nocheck CA", nocheck=True, ca=True, issuer=site["root"])
    for cert, issuer, key in ((leaf, site["issuer"], ikey), (sub, site["root"], rkey)):
        canned = Canned(lambda req: _signed(site, cert, ocsp.OCSPCertStatus.REVOKED, issuer, key))
        try:
            st = _checker(tmp_path, responders=(Responder("*", canned.url),)).check(cert, issuer)
            assert (st.status, st.source) == ("revoked", "ocsp"), st
        finally:
            canned.stop()
        st = _checker(tmp_path, crl_fallback=False).check(cert, issuer)      # no URL at all: not established
        assert st.status == "error", st
    srv = Server(site["ca"], port=site["port"])
    try:
        ghost = _leaf(site, ikey, cn="nocheck ghost", nocheck=True, ocsp_url=site["url"] + "/")
        st = _checker(tmp_path, timeout=3).check(ghost, site["issuer"])
        assert st.status == "unknown", st
    finally:
        srv.stop()


def test_delegated_responder_with_ocsp_nocheck_still_vouches(site, tmp_path):
    """The one place ocsp-nocheck counts: `ca serve`'s delegated responder signs the answers."""
    srv = Server(site["ca"], port=site["port"])
    try:
        st = _checker(tmp_path, timeout=3).check(site["victor"], site["issuer"])
        assert (st.status, st.source) == ("good", "ocsp"), st
    finally:
        srv.stop()


def test_a_delegated_responder_known_revoked_is_not_believed(tmp_path):
    """ocsp-nocheck spares the responder an OCSP lookup, not a revocation the node already
    holds: once a cached CRL lists the responder certificate, its answers are not used."""
    port = free_port()
    ca = tmp_path / "ca"
    assert run_cli("ca", "init", "--ca", ca, "--name", "Resp Site", "--url", f"http://127.0.0.1:{port}").rc == 0
    leaf, issuer = issue_and_sign(ca, tmp_path, "alice")
    srv = Server(ca, port=port)
    try:
        cache = str(tmp_path / "c")
        st = Checker(Revocation(cache_dir=cache, timeout=3)).check(leaf, issuer)
        assert (st.status, st.source) == ("good", "ocsp"), st
        shutil.rmtree(cache)
        r = run_cli("ca", "revoke", "--ca", ca, "--cert", ca / "ocsp-responder.pem", "--reason", "keyCompromise")
        assert r.rc == 0, r
        time.sleep(1.0)
        dead = (Responder("*", f"http://127.0.0.1:{free_port()}/"),)
        st = Checker(Revocation(cache_dir=cache, timeout=3, responders=dead)).check(leaf, issuer)
        assert (st.status, st.source) == ("good", "crl"), st            # the CRL (listing the responder) is cached
        st = Checker(Revocation(cache_dir=cache, timeout=3, crl_fallback=False)).check(leaf, issuer)
        assert st.status == "error" and "delegated responder certificate is revoked" in st.reason, st
    finally:
        srv.stop()
