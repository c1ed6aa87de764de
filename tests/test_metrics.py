"""Issue 11 numbers: `ca serve`'s Prometheus /metrics and /healthz (a real server with two
pre-forked workers on 127.0.0.1, scraped and parsed with prometheus_client's own parser),
and the node decision counters in node_exporter's textfile format (real verdicts from real
images and a real CA; concurrent forked writers; an unprivileged hook)."""
import base64
import fcntl  # noqa: F401 - imported before forking children as nobody (who cannot read /root's Python)
import hashlib
import os
import shutil
import signal
import stat
import syslog  # noqa: F401 - see fcntl
import time

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from prometheus_client.parser import text_string_to_metric_families

from conftest import APPT, Server, ca_site, free_port, responder_policy, run_cli
from pki import SiteChain
from sifguard.enforce import audit, counters
from sifguard.enforce.core import refusal
from sifguard.enforce.decide import Engine
from sifguard.policy.loader import PolicyError, load, load_fast

ONE_GROUP = os.path.join(APPT, "images", "one-group.sif")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    d = tmp_path_factory.mktemp("msite")
    out = ca_site(d, "Metrics Site", ("alice", "eve"), "--ocsp-validity-hours", "1")
    ca, port = out["ca"], out["port"]
    assert run_cli("ca", "revoke", "--ca", ca, "--cert", d / "eve.pem", "--reason", "keyCompromise").rc == 0
    shutil.copyfile(ONE_GROUP, d / "unsigned.sif")
    shutil.copyfile(d / "alice.sif", d / "tampered.sif")
    with open(d / "tampered.sif", "r+b") as f:
        f.seek(36864)
        f.write(b"X")
    foreign = SiteChain(d, cn="outsider", email="x@elsewhere.org")
    shutil.copyfile(ONE_GROUP, d / "foreign.sif")
    assert run_cli("sign", d / "foreign.sif", "--key", foreign.key_pem, "--cert", foreign.bundle_pem).rc == 0
    out["foreign"] = foreign
    srv = Server(ca, port=port)
    out["url"] = srv.url
    yield out
    srv.stop()


def scrape(url) -> dict:
    """{(sample name, frozenset of labels): value} from /metrics, parsed by prometheus_client."""
    r = requests.get(url + "/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain"), r
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples, name, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def ocsp_req(cert, issuer, nonce=False) -> bytes:
    b = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
    if nonce:
        b = b.add_extension(x509.OCSPNonce(os.urandom(16)), critical=False)
    return b.build().public_bytes(serialization.Encoding.DER)


def tsa_req(alg="sha256") -> bytes:
    from asn1crypto import tsp
    return tsp.TimeStampReq({"version": 1, "message_imprint": {
        "hash_algorithm": {"algorithm": alg}, "hashed_message": hashlib.new(alg, os.urandom(8)).digest()},
        "cert_req": True}).dump()


def post_ocsp(url, der):
    r = requests.post(url + "/", data=der, headers={"Content-Type": "application/ocsp-request"}, timeout=10)
    assert r.status_code == 200
    return ocsp.load_der_ocsp_response(r.content)


def workers_of(pid) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def metric_files(worker) -> set[str]:
    with open(f"/proc/{worker}/maps") as f:
        return {line.split()[-1] for line in f if "sifguard-metrics-" in line and line.rstrip().endswith(".db")}


# --- /metrics ---------------------------------------------------------------------------
@pytest.fixture
def fresh(site):
    """A `ca serve` of its own (two workers), so the counts start at zero."""
    srv = Server(site["ca"])
    yield srv
    srv.stop()


def test_counts_per_kind_and_status_across_workers(site, fresh):
    url = fresh.url
    a, e, iss = site["alice"], site["eve"], site["issuer"]
    want = {}

    def expect(kind, status, n=1):
        want[(kind, status)] = want.get((kind, status), 0) + n

    expect("other", "200")          # the fixture's readiness probe, GET /
    for _ in range(5):
        assert post_ocsp(url, ocsp_req(a, iss)).certificate_status == ocsp.OCSPCertStatus.GOOD
        expect("ocsp_post", "good")
    for _ in range(3):
        assert post_ocsp(url, ocsp_req(e, iss, nonce=True)).certificate_status == ocsp.OCSPCertStatus.REVOKED
        expect("ocsp_post", "revoked")
    foreign = site["foreign"]
    assert post_ocsp(url, ocsp_req(foreign.leaf, foreign.inter)).response_status == \
        ocsp.OCSPResponseStatus.UNAUTHORIZED
    expect("ocsp_post", "unauthorized")
    for body in (b"\x30\x03junk", b"not der at all"):
        assert post_ocsp(url, body).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        expect("ocsp_post", "malformedRequest")
    get = base64.b64encode(ocsp_req(a, iss)).decode()
    for _ in range(4):
        r = requests.get(f"{url}/{get}", timeout=10)
        assert r.status_code == 200 and ocsp.load_der_ocsp_response(r.content).certificate_status == \
            ocsp.OCSPCertStatus.GOOD
        expect("ocsp_get", "good")
    assert requests.get(f"{url}/%%%%", timeout=10).status_code == 200
    expect("ocsp_get", "malformedRequest")
    for path in ("/crl.der", "/crl.der", "/crl.pem", "/root-crl.der"):
        assert requests.get(url + path, timeout=10).status_code == 200
        expect("crl", "200")
    for path in ("/root.pem", "/intermediate.crt", "/tsa.pem"):
        assert requests.get(url + path, timeout=10).status_code == 200
        expect("cert", "200")
    for _ in range(2):
        r = requests.post(url + "/tsa", data=tsa_req(), headers={"Content-Type": "application/timestamp-query"},
                          timeout=10)
        assert r.status_code == 200
        expect("tsa", "granted")
    r = requests.post(url + "/tsa", data=tsa_req("md5"), headers={"Content-Type": "application/timestamp-query"},
                      timeout=10)
    assert r.status_code == 200
    expect("tsa", "rejection")
    assert requests.post(url + "/tsa", data=tsa_req(), headers={"Content-Type": "text/plain"},
                         timeout=10).status_code == 415
    expect("tsa", "415")
    assert requests.get(url + "/", timeout=10).status_code == 200
    expect("other", "200")
    assert requests.put(url + "/x", data=b"", timeout=10).status_code == 405
    expect("other", "405")
    assert requests.get(url + "/healthz", timeout=10).status_code == 200
    expect("healthz", "200")

    s = scrape(url)
    # the same totals whichever worker answers the scrape (a new connection each time)
    for _ in range(3):
        s2 = scrape(url)
        for (kind, status), n in want.items():
            assert value(s2, "sifguard_requests_total", kind=kind, status=status) == n, (kind, status)
    for (kind, status), n in want.items():
        assert value(s, "sifguard_requests_total", kind=kind, status=status) == n, (kind, status, s)
    ours = {k: v for k, v in s.items() if k[0] == "sifguard_requests_total" and dict(k[1])["kind"] != "metrics"}
    assert sum(ours.values()) == sum(want.values())          # nothing else counted, scrapes apart
    # histogram: per kind, count == requests of that kind, buckets cumulative up to +Inf
    for kind in ("ocsp_post", "ocsp_get", "crl", "tsa", "cert", "other", "healthz"):
        n = sum(v for (k, st), v in want.items() if k == kind)
        assert value(s, "sifguard_request_duration_seconds_count", kind=kind) == n
        buckets = sorted(((float(dict(lb)["le"]), v) for (name, lb), v in s.items()
                          if name == "sifguard_request_duration_seconds_bucket" and dict(lb)["kind"] == kind))
        assert buckets[-1] == (float("inf"), n)
        assert all(x[1] <= y[1] for x, y in zip(buckets, buckets[1:]))
        assert buckets[0][0] <= 0.0001 and any(le == 1.0 for le, _ in buckets)
        assert value(s, "sifguard_request_duration_seconds_sum", kind=kind) >= 0
    # pre-signed answers: the 5 POSTs and 4 GETs for alice (nonce-less), not the nonce'd ones
    assert value(s, "sifguard_ocsp_presigned_age_seconds_count") == 9
    assert 0 <= value(s, "sifguard_ocsp_presigned_age_seconds_sum") < 9 * 3600
    assert 0 <= value(s, "sifguard_ocsp_presigned_oldest_age_seconds") < 3600
    assert value(s, "sifguard_tsa_tokens_total") == 2
    assert value(s, "sifguard_crl_number", issuer="intermediate") >= 1
    assert 0 <= value(s, "sifguard_crl_age_seconds", issuer="intermediate") < 86400
    assert value(s, "sifguard_crl_next_update_seconds", issuer="intermediate") > 0
    for c in ("database", "ocsp", "tsa"):
        assert value(s, "sifguard_up", component=c) == 1
    # both workers keep their counts in one private directory (0700, this user's)
    workers = workers_of(fresh.proc.pid)
    assert len(workers) == 2
    dirs = {os.path.dirname(f) for w in workers for f in metric_files(w)}
    assert len(dirs) == 1
    d = dirs.pop()
    st = os.stat(d)
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()
    # a worker killed and replaced: its counts stay in the totals
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (len(workers_of(fresh.proc.pid)) < 2 or
                                           workers[0] in workers_of(fresh.proc.pid)):
        time.sleep(0.05)
    assert post_ocsp(url, ocsp_req(a, iss)).certificate_status == ocsp.OCSPCertStatus.GOOD
    s = scrape(url)
    assert value(s, "sifguard_requests_total", kind="ocsp_post", status="good") == 6
    assert value(s, "sifguard_tsa_tokens_total") == 2
    fresh.stop()
    assert not os.path.exists(d)            # removed when the server stops


def test_metrics_endpoint_methods_and_head(site):
    assert requests.post(site["url"] + "/metrics", data=b"x", timeout=10).status_code == 405
    assert requests.head(site["url"] + "/metrics", timeout=10).status_code == 200
    assert requests.delete(site["url"] + "/healthz", timeout=10).status_code == 405
    r = requests.get(site["url"] + "/healthz", timeout=10)
    assert r.status_code == 200 and r.text == "ok\n"


# --- /healthz -----------------------------------------------------------------------------
@pytest.fixture
def ca_copy(site, tmp_path):
    ca = tmp_path / "ca"
    shutil.copytree(site["ca"], ca)
    return ca


def test_healthz_degraded_when_tsa_key_is_locked(tmp_path):
    pf = tmp_path / "pass"
    pf.write_text("correct horse\n")
    ca = tmp_path / "ca"
    assert run_cli("ca", "init", "--ca", ca, "--name", "Locked", "--url", "http://127.0.0.1:1",
                   "--passphrase-file", pf).rc == 0
    key = serialization.load_pem_private_key((ca / "ocsp-responder.key").read_bytes(), b"correct horse")
    (ca / "ocsp-responder.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    srv = Server(ca)
    try:
        r = requests.get(srv.url + "/healthz", timeout=10)
        # OCSP works, so the responder stays in rotation; the body says what is degraded
        assert r.status_code == 200 and r.text.startswith("degraded: ") and "passphrase" in r.text
        assert r.text.count("\n") == 1
        s = scrape(srv.url)
        assert value(s, "sifguard_up", component="tsa") == 0
        assert value(s, "sifguard_up", component="ocsp") == 1
        assert requests.post(srv.url + "/tsa", data=tsa_req(), timeout=10,
                             headers={"Content-Type": "application/timestamp-query"}).status_code == 503
        s = scrape(srv.url)
        assert value(s, "sifguard_requests_total", kind="tsa", status="503") == 1
        assert value(s, "sifguard_tsa_tokens_total") == 0
    finally:
        srv.stop()


@pytest.mark.parametrize("how", ["garbage", "removed", "truncated"])
def test_healthz_503_when_database_unreadable(ca_copy, how):
    srv = Server(ca_copy)
    try:
        assert requests.get(srv.url + "/healthz", timeout=10).text == "ok\n"
        db = ca_copy / "ca.db"
        for f in ("ca.db-wal", "ca.db-shm"):
            if (ca_copy / f).exists():
                os.unlink(ca_copy / f)
        if how == "garbage":
            tmp = ca_copy / "x"
            tmp.write_bytes(os.urandom(8192))
            os.replace(tmp, db)
        elif how == "removed":
            os.unlink(db)
        else:
            with open(ca_copy / "y", "wb") as f:
                f.write(open(db, "rb").read()[:100])
            os.replace(ca_copy / "y", db)
        for _ in range(4):          # whichever worker answers
            r = requests.get(srv.url + "/healthz", timeout=10)
            assert r.status_code == 503 and r.text.count("\n") == 1 and "CA database" in r.text, r.text
        s = scrape(srv.url)
        assert value(s, "sifguard_up", component="database") == 0
        assert value(s, "sifguard_up", component="ocsp") == 0
    finally:
        srv.stop()


# --- node decision counters ---------------------------------------------------------------
def read_counts(path) -> dict:
    out = {}
    for fam in text_string_to_metric_families(open(path).read()):
        assert fam.name == "sifguard_decisions" and fam.type == "counter"
        for s in fam.samples:
            assert s.name == "sifguard_decisions_total"
            out[(s.labels["hook"], s.labels["decision"], s.labels["reason_class"])] = s.value
    return out


def _writer(path, n, hook):
    for i in range(n):
        assert counters.count(path, hook, ("allow", "refuse")[i % 2], ("ok", "unsigned")[i % 2])


def test_concurrent_writers_exact_and_always_parseable(tmp_path):
    path = str(tmp_path / "tf" / "sifguard.prom")
    os.makedirs(os.path.dirname(path), mode=0o755)
    os.chmod(os.path.dirname(path), 0o755)
    writers, n = 16, 50
    reader = os.fork()
    if reader == 0:          # parses the file in a loop while the writers work
        code = 0
        try:
            end = time.monotonic() + 120
            while time.monotonic() < end and not os.path.exists(path + ".done"):
                if os.path.exists(path):
                    c = read_counts(path)
                    assert all(v >= 1 for v in c.values())
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    pids = []
    for w in range(writers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _writer(path, n, f"hook{w % 4}")
            except BaseException:  # noqa: BLE001
                code = 1
            os._exit(code)
        pids.append(pid)
    assert all(os.waitpid(p, 0)[1] == 0 for p in pids)
    open(path + ".done", "w").close()
    assert os.waitpid(reader, 0)[1] == 0
    c = read_counts(path)
    assert sum(c.values()) == writers * n
    for h in range(4):
        assert c[(f"hook{h}", "allow", "ok")] == 4 * n // 2
        assert c[(f"hook{h}", "refuse", "unsigned")] == 4 * n // 2
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert sorted(os.listdir(os.path.dirname(path))) == ["sifguard.prom", "sifguard.prom.done", "sifguard.prom.lock"]


def _as_nobody(fn) -> int:
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            code = fn()
        except BaseException:  # noqa: BLE001
            code = 4
        os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_unprivileged_hook_skips_silently():
    import tempfile
    d = tempfile.mkdtemp(prefix="sifguard-tf-", dir="/tmp")     # reachable by nobody (tmp_path is not)
    try:
        os.chmod(d, 0o755)
        path = os.path.join(d, "sifguard.prom")
        assert counters.count(path, "shim", "allow", "ok")
        before = open(path).read()
        # nobody reads the root-owned file but cannot write it: skipped, False, no exception
        assert _as_nobody(lambda: 0 if open(path).read() == before and
                          counters.count(path, "shim", "refuse", "unsigned") is False else 1) == 0
        verdict = refusal("/x.sif", "group 1 is not signed")

        def through_audit():      # the one writer: no exception (the audit record goes to syslog)
            audit.write_decision(os.path.join(d, "audit.jsonl"), verdict, metrics=path, hook="shim")
            audit.write_event(None, metrics=path, hook="shim", decision="deferred", reason="r")
            return 0
        assert _as_nobody(through_audit) == 0
        assert open(path).read() == before
        assert sorted(os.listdir(d)) == ["sifguard.prom", "sifguard.prom.lock"]     # no temp file left
        # a path nobody cannot even reach: skipped too
        assert _as_nobody(lambda: 0 if counters.count("/root/nope/x.prom", "shim", "allow", "ok") is False
                          else 1) == 0
    finally:
        shutil.rmtree(d)


def test_root_writes_only_into_a_directory_of_its_own(tmp_path):
    d = tmp_path / "open"
    d.mkdir()
    os.chmod(d, 0o777)
    assert counters.count(str(d / "s.prom"), "prolog", "allow", "ok") is False
    assert not os.listdir(d)
    os.chmod(d, 0o755)
    (d / "s.prom.lock").symlink_to(tmp_path / "elsewhere")
    assert counters.count(str(d / "s.prom"), "prolog", "allow", "ok") is False     # no following links
    assert not (tmp_path / "elsewhere").exists()
    f = tmp_path / "file"
    f.write_text("")
    assert counters.count(str(f / "s.prom"), "prolog", "allow", "ok") is False     # ENOTDIR: no raise


def test_labels_are_bounded_and_hand_edits_tolerated(tmp_path):
    os.chmod(tmp_path, 0o755)
    path = str(tmp_path / "s.prom")
    assert counters.count(path, "/home/alice/evil\"hook", "allow", "ok")
    assert counters.count(path, "shim", "maybe", "whatever")
    with open(path, "a") as f:
        f.write('garbage line\nsifguard_decisions_total{hook="x"} NaN\n')
    assert counters.count(path, "shim", "refuse", "revoked")
    c = read_counts(path)
    assert c == {("other", "allow", "ok"): 1, ("shim", "other", "other"): 1, ("shim", "refuse", "revoked"): 1}


def _policy(site, tmp_path, textfile, mode="enforce", url=None, extra=""):
    return responder_policy(tmp_path / "policy.yaml", site, mode, url, tail=f"""metrics: {{textfile: {textfile}}}
rules:
{extra}  - name: default
    require: signed
""")


def test_reason_classes_from_real_verdicts(site, tmp_path):
    os.chmod(tmp_path, 0o755)
    tf = str(tmp_path / "node" / "sifguard.prom")
    d = site["d"]
    eng = Engine(load(_policy(site, tmp_path, tf, extra=f"""  - name: trial
    match: {{path: "{d}/trial-*"}}
    action: audit
  - name: alice-only
    match: {{path: "{d}/eve-copy.sif"}}
    signers: [{{email: "alice@example.org"}}]
""")))
    shutil.copyfile(d / "unsigned.sif", d / "trial-unsigned.sif")
    shutil.copyfile(d / "eve.sif", d / "eve-copy.sif")
    want = {"alice.sif": ("allow", "ok"), "unsigned.sif": ("refuse", "unsigned"),
            "tampered.sif": ("refuse", "tampered"), "foreign.sif": ("refuse", "untrusted"),
            "eve.sif": ("refuse", "revoked"), "trial-unsigned.sif": ("audit", "unsigned"),
            "eve-copy.sif": ("refuse", "policy")}
    for name, (decision, cls) in want.items():
        v = eng.decide(str(d / name))
        assert v.decision == decision, (name, v.reason)
        assert counters.reason_class(v) == cls, (name, v.reason, v.checks)
    # a responder that is down: revocation unavailable (enforce refuses)
    down = Engine(load(_policy(site, tmp_path, tf, url=f"http://127.0.0.1:{free_port()}/")))
    v = down.decide(str(d / "alice.sif"))
    assert v.decision == "refuse" and counters.reason_class(v) == "revocation_unavailable", v.reason
    c = read_counts(tf)
    expected = {}
    for decision, cls in list(want.values()) + [("refuse", "revocation_unavailable")]:
        expected[("verify", decision, cls)] = expected.get(("verify", decision, cls), 0) + 1
    assert c == expected
    # the audit log has every record too, and no label carries a path or user
    assert len(open(tmp_path / "audit.jsonl").read().splitlines()) == len(want) + 1
    assert str(d) not in open(tf).read()


def test_counter_failure_never_changes_a_decision(site, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    eng = Engine(load(_policy(site, tmp_path, str(blocker / "x.prom"))))
    assert eng.decide(str(site["d"] / "alice.sif")).decision == "allow"
    assert eng.decide(str(site["d"] / "unsigned.sif")).decision == "refuse"
    assert eng.last_audit_error == ""


@pytest.mark.parametrize("value,why", [
    ("relative/sifguard.prom", "absolute path"),
    ("/var/lib/node_exporter/textfile/sifguard.txt", ".prom file"),
    ("~", "non-empty string"),
    ("[/a.prom]", "must be"),
])
def test_loader_validates_textfile(site, tmp_path, value, why):
    p = open(_policy(site, tmp_path, "/x.prom")).read().replace("metrics: {textfile: /x.prom}", f"metrics:\n  textfile: {value}")
    open(tmp_path / "p.yaml", "w").write(p)
    with pytest.raises(PolicyError) as e:
        load(str(tmp_path / "p.yaml"))
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'p.yaml'}:14: ") and why in msg, msg


def test_loader_unknown_key_and_snapshot_round_trip(site, tmp_path):
    p = _policy(site, tmp_path, "/var/lib/node_exporter/textfile/sifguard.prom")
    assert load(p).metrics_textfile == "/var/lib/node_exporter/textfile/sifguard.prom"
    first = load_fast(p)                       # writes the compiled snapshot
    assert os.path.exists(p + ".sifguard-compiled.json")
    again = load_fast(p)                       # read back from it
    assert again == first and again.metrics_textfile == "/var/lib/node_exporter/textfile/sifguard.prom"
    import json
    snap = json.load(open(p + ".sifguard-compiled.json"))
    snap["policy"]["metrics_textfile"] = "relative.prom"
    json.dump(snap, open(p + ".sifguard-compiled.json", "w"))
    assert load_fast(p).metrics_textfile == "/var/lib/node_exporter/textfile/sifguard.prom"   # snapshot refused
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(p).read().replace("metrics: {textfile:", "metrics: {path:"))
    with pytest.raises(PolicyError, match=r"bad.yaml:\d+: .*path"):
        load(str(bad))
    none = tmp_path / "none.yaml"
    none.write_text("\n".join(x for x in open(p).read().splitlines() if not x.startswith("metrics")))
    assert load(str(none)).metrics_textfile is None


def test_events_are_counted_by_the_one_writer(tmp_path):
    os.chmod(tmp_path, 0o755)
    tf, log = str(tmp_path / "s.prom"), str(tmp_path / "audit.jsonl")
    audit.write_event(log, metrics=tf, hook="shim", decision="deferred", reason="decided by the task hook")
    audit.write_event(log, metrics=tf, hook="shim", decision="refuse", reason="/j/x.sif: no such file")
    audit.write_event(log, metrics=tf, hook="shim", decision="refuse",
                      reason="'apptainer build' is not allowed on this cluster by the site policy")
    audit.write_event(log, metrics=tf, hook="task", decision="allow", image="docker://x")
    audit.write_decision(log, refusal("/j/y.sif", "group 1 is not signed"), metrics=tf, hook="prolog")
    audit.write_decision(None, refusal("/j/y.sif", "group 1 is not signed"), metrics=tf, hook="prolog")
    assert read_counts(tf) == {("shim", "deferred", "other"): 1, ("shim", "refuse", "unreadable"): 1,
                               ("shim", "refuse", "policy"): 1, ("task", "allow", "ok"): 1,
                               ("prolog", "refuse", "unsigned"): 2}
    assert len(open(log).read().splitlines()) == 5


def test_no_metrics_flag(site):
    srv = Server(site["ca"], "--no-metrics")
    try:
        for path in ("/metrics", "/healthz"):       # plain OCSP GET paths again (malformed requests)
            r = requests.get(srv.url + path, timeout=10)
            assert r.status_code == 200 and r.headers["Content-Type"] == "application/ocsp-response"
        assert post_ocsp(srv.url, ocsp_req(site["alice"], site["issuer"])).certificate_status == \
            ocsp.OCSPCertStatus.GOOD
    finally:
        srv.stop()


def test_lock_cannot_be_held_by_users_and_a_stuck_holder_costs_one_increment():
    import tempfile
    d = tempfile.mkdtemp(prefix="sifguard-tf-", dir="/tmp")
    try:
        os.chmod(d, 0o755)
        path = os.path.join(d, "sifguard.prom")
        assert counters.count(path, "task", "allow", "ok")
        assert stat.S_IMODE(os.stat(path + ".lock").st_mode) == 0o600
        os.chmod(path + ".lock", 0o644)                  # loosened by hand: root tightens it again
        assert counters.count(path, "task", "allow", "ok")
        assert stat.S_IMODE(os.stat(path + ".lock").st_mode) == 0o600

        def hold():
            try:
                os.open(path + ".lock", os.O_RDONLY)
            except PermissionError:
                return 0
            return 1
        assert _as_nobody(hold) == 0
        # a root writer stopped while holding the lock: the others skip, they do not hang
        r, w = os.pipe()
        holder = os.fork()
        if holder == 0:
            fd = os.open(path + ".lock", os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(w, b"x")
            time.sleep(30)
            os._exit(0)
        try:
            assert os.read(r, 1) == b"x"
            assert counters.count(path, "task", "allow", "ok") is False
        finally:
            os.kill(holder, signal.SIGKILL)
            os.waitpid(holder, 0)
        assert counters.count(path, "task", "allow", "ok")
        assert read_counts(path) == {("task", "allow", "ok"): 3}
    finally:
        shutil.rmtree(d)
