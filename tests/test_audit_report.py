"""`sifguard audit report`: real decision lines from the real engine and hooks, read back;
volume, damaged and rotated logs, time windows, the JSON schema, the terminal table."""
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter

import pytest

from answers import answer
from conftest import APPT, run_cli
from pki import NOW, SiteChain
from sifguard.audit import reader, report
from sifguard.audit.classify import CLASSES, classify
from sifguard.audit.topk import SpaceSaving
from sifguard.enforce.decide import Engine
from sifguard.policy.decide import JobContext
from sifguard.policy.loader import load


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".000000Z"


def report_of(*args):
    r = run_cli("audit", "report", *args, "--json")
    assert r.rc == 0, r
    return json.loads(r.out)


# --- real lines: the engine (`sifguard verify --policy`) and the Slurm gate ----------------------

class StubChecker:
    """Revocation answers without a responder: `revoked` or `error` for one leaf, good otherwise."""

    def __init__(self, leaf, status):
        self.leaf, self.status = leaf, status

    def share(self, deadline, links_left):
        return deadline

    def check(self, cert, issuer, deadline=None):
        subject = cert.subject.rfc4514_string()
        if cert == self.leaf:
            why = "revoked 2026-11-30 10:00:00Z (keyCompromise)" if self.status == "revoked" else "responder timed out"
            return answer(self.status, "ocsp", why, subject)
        return answer("good", "ocsp", "OCSP good", subject)


def _sign(img, chain):
    assert run_cli("sign", img, "--key", chain.key_pem, "--cert", chain.bundle_pem).rc == 0


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """An audit log written by the real engine and gate, and what each image's refusal is."""
    d = tmp_path_factory.mktemp("audit-real")
    site = SiteChain(d, cn="builder", email="builder@hpc.example.org")
    outsider = SiteChain(d, cn="outsider", email="x@elsewhere.org")
    foreign = SiteChain(d, cn="foreign")                    # its root is not trusted
    old = SiteChain(d, cn="old", days=1, start=NOW - __import__("datetime").timedelta(days=3))
    src = os.path.join(APPT, "images", "one-group.sif")
    imgs = {}
    for name, chain in (("good", site), ("outsider", outsider), ("foreign", foreign), ("expired", old),
                        ("tampered", site), ("unsigned", None), ("is revoked", None), ("revoked", site),
                        ("unavailable", site)):
        p = d / f"{name}.sif"
        shutil.copyfile(src, p)
        if chain:
            _sign(p, chain)
        imgs[name] = str(p)
    with open(imgs["tampered"], "r+b") as f:                # one byte of the signed partition
        f.seek(36864)
        b = f.read(1)
        f.seek(36864)
        f.write(bytes([b[0] ^ 1]))
    log = d / "audit.jsonl"
    base = (f"version: 1\ntrust:\n  roots: [{site.root_pem}, {outsider.root_pem}, {old.root_pem}]\n"
            f"audit: {{log: {log}}}\ncache: {{images: off}}\n")
    rules = (f"rules:\n  - name: builders-only\n    match: {{path: \"{d}/*.sif\", account: prod}}\n"
             f"    signers: [{{email: \"*@hpc.example.org\"}}]\n"
             f"  - name: trial\n    match: {{path: \"{d}/*.sif\", partition: debug}}\n    action: audit\n"
             f"  - name: default\n    require: signed\n")
    policy = d / "policy.yaml"
    policy.write_text(base + "revocation: {mode: off}\n" + rules)
    want = {}

    def verify(name, *ctx, rc=1, cls=None):
        r = run_cli("verify", imgs[name], "--policy", policy, "--user", "alice", *ctx)
        assert r.rc == rc, r
        if cls:
            want[imgs[name]] = cls
    verify("good", "--account", "prod", rc=0)
    verify("good", rc=0)
    verify("outsider", "--account", "prod", cls="signer-not-allowed")
    verify("unsigned", cls="unsigned")
    verify("is revoked", cls="unsigned")                    # the name says revoked; the checks say unsigned
    verify("tampered", cls="tampered")
    verify("foreign", cls="untrusted-signer")
    verify("expired", cls="expired")
    verify("unsigned", "--partition", "debug", rc=0)        # audit rule: would refuse (unsigned)
    # revocation: the real engine, its answers from a stub checker (no responder needed)
    rev_policy = d / "policy-rev.yaml"
    rev_policy.write_text(base + "revocation: {mode: enforce}\n" + rules)
    for name, status, cls in (("revoked", "revoked", "revoked"), ("unavailable", "error", "revocation-unavailable")):
        eng = Engine(load(str(rev_policy)), checker=StubChecker(site.leaf, status))
        v = eng.decide(imgs[name], JobContext(user="bob"))
        assert not v.allowed, v
        want[imgs[name]] = cls
    # the Slurm gate's own records (events: no verdict, no checks)
    from sifguard.slurm.gate import Gate
    gate = Gate(load(str(policy)), "prolog-slurmctld", audit_extra={"job": "42"})
    ctx = JobContext(user="carol")
    text = d / "changed is revoked.sif"                     # not a SIF, and a name made to mislead
    text.write_text("#!/bin/sh\necho not a SIF image\n")
    (d / "sandbox").mkdir()
    cases = ((str(text), "unreadable"), (str(d / "sandbox"), "unreadable"),
             (str(d / "missing expired.sif"), "unreadable"), ("docker://alpine", "runtime-refused"))
    for operand, cls in cases:
        assert not gate.admit_image(operand, ctx, str(d)).allowed
        want[operand] = cls
    adm = gate.admit_image(str(d / "later.sif"), ctx, str(d), missing="defer")
    assert adm.allowed and adm.decision == "deferred"
    assert not gate.refuse_direct("line 3: `/opt/x/apptainer run y.sif` reaches the container runtime "
                                  "without sifguard's shim", ctx, line=3).allowed
    return {"log": str(log), "want": want, "policy": str(policy), "dir": d}


def test_real_lines_are_classified_by_what_refused_them(real):
    recs = [json.loads(x) for x in open(real["log"])]
    got = {}
    for r in recs:
        if r["decision"] in ("refuse", "audit"):
            key = r.get("operand") or r.get("image") or "direct"
            got.setdefault(key, set()).add(classify(r))
    for image, cls in real["want"].items():
        assert got.get(image) == {cls}, (image, got.get(image))
    assert got["direct"] == {"runtime-refused"}


def test_report_over_real_lines(real):
    rep = report_of("--log", real["log"])
    assert rep["decisions"] == {"allow": 2, "refuse": 13, "audit": 1, "deferred": 1, "other": 0}
    assert rep["decisions_total"] == 17 and rep["lines"]["records"] == 17
    by = rep["refusals"]["by_reason"]
    assert by == {"unsigned": 2, "untrusted-signer": 1, "tampered": 1, "revoked": 1, "expired": 1,
                  "revocation-unavailable": 1, "signer-not-allowed": 1, "unreadable": 3, "runtime-refused": 2,
                  "other": 0}
    assert rep["audits"]["by_reason"]["unsigned"] == 1 and sum(rep["audits"]["by_reason"].values()) == 1
    users = {r["key"]: r["count"] for r in rep["refusals"]["by_user"]["rows"]}
    assert users == {"alice": 6, "bob": 2, "carol": 5}
    signers = {r["key"] for r in rep["refusals"]["by_signer"]["rows"]}
    assert {"CN=outsider", "CN=builder", "(no signer)"} <= signers
    rules = {r["key"] for r in rep["refusals"]["by_rule"]["rows"]}
    assert {"builders-only", "default", "(no rule)"} <= rules
    hooks = {r["key"]: r["count"] for r in rep["refusals"]["by_hook"]["rows"]}
    assert hooks == {"verify": 8, "prolog-slurmctld": 5}
    assert rep["counting"]["exact"] and rep["range"]["first"] <= rep["range"]["last"]
    assert sum(sum(v for k, v in day.items() if k != "day") for day in rep["per_day"]) == 17


def test_default_log_is_the_policys(real):
    a = report_of("--policy", real["policy"])
    b = report_of("--log", real["log"])
    assert a["decisions"] == b["decisions"] and a["sources"] == [{"path": real["log"], "lines": 17}]
    no_log = real["dir"] / "no-log.yaml"
    no_log.write_text("version: 1\ntrust: {roots: [x.pem]}\n")
    r = run_cli("audit", "report", "--policy", no_log)
    assert r.rc == 2 and "names no audit log" in r.err and r.err.count("\n") == 1
    r = run_cli("audit", "report", "--policy", real["policy"], "--log", real["log"])
    assert r.rc == 2 and r.err.count("\n") == 1


# --- synthetic lines ------------------------------------------------------------------------------

def rec(ts, decision="refuse", user="u1", image="/i.sif", reason="group 1 is not signed", **kw):
    r = {"image": image, "decision": decision, "reason": reason, "context": {"user": user}, "time": iso(ts)}
    return r | kw


def write(path, records, opener=open):
    with opener(path, "wt") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return str(path)


def test_damaged_lines_are_skipped_and_counted(tmp_path):
    t = time.time()
    p = tmp_path / "audit.jsonl"
    good = json.dumps(rec(t))
    with open(p, "wb") as f:
        f.write((good + "\n").encode())
        f.write(b"not json at all\n")
        f.write(b"[1, 2, 3]\n")
        f.write(b"\n")
        f.write(b'{"decision": "refuse", "reason": "\xff\xfe"}\n')          # not UTF-8
        f.write(b'{"decision": "allow", "x": "' + b"a" * (2 << 20) + b'"}\n')   # over 1 MiB
        f.write((good + "\n").encode())
        f.write(b'{"image": "/i.sif", "decision": "ref')                      # a write in progress
    rep = report_of("--log", p)
    assert rep["decisions_total"] == 2 and rep["decisions"]["refuse"] == 2
    assert {k: rep["lines"][k] for k in ("malformed", "partial", "oversized", "not-a-record", "blank")} == \
        {"malformed": 2, "partial": 1, "oversized": 1, "not-a-record": 1, "blank": 1}
    # a complete last record without its newline is a record
    with open(p, "ab") as f:
        f.write(b"\n" + good.encode())
    rep = report_of("--log", p)
    assert rep["decisions_total"] == 3 and rep["lines"]["malformed"] == 3


def test_old_records_without_checks_or_context(tmp_path):
    t = time.time()
    rows = [{"decision": "refuse", "reason": "group 1: signer certificate CN=x is revoked: revoked (keyCompromise)",
             "image": "/a.sif", "time": iso(t)},
            {"decision": "refuse", "reason": "group 1: data of object 2 changed (data object integrity compromised)",
             "time": iso(t)},
            {"decision": "refuse",
             "reason": "group 1: no trusted signature (certificate does not chain to a trusted root)"},
            {"decision": "allow", "image": 7, "context": "junk", "signers": "junk", "time": 12},
            {"decision": "weird", "reason": None, "checks": "junk"},
            {"reason": "no decision at all"}]
    rep = report_of("--log", write(tmp_path / "old.jsonl", rows))
    assert rep["decisions"] == {"allow": 1, "refuse": 3, "audit": 0, "deferred": 0, "other": 2}
    by = rep["refusals"]["by_reason"]
    assert (by["revoked"], by["tampered"], by["untrusted-signer"]) == (1, 1, 1)
    assert rep["lines"]["undated"] == 4
    assert {r["key"] for r in rep["refusals"]["by_user"]["rows"]} == {"(unknown)"}


def test_rotated_plain_and_gzip_files(tmp_path):
    t = time.time()
    older = write(tmp_path / "audit.jsonl.2.gz", [rec(t - 3 * 86400, user="a")] * 3, gzip.open)
    old = write(tmp_path / "audit.jsonl.1", [rec(t - 2 * 86400, user="b")] * 2)
    cur = write(tmp_path / "audit.jsonl", [rec(t, decision="allow", user="c")])
    renamed = tmp_path / "rotated-without-suffix"
    shutil.copyfile(older, renamed)                              # gzip told by its magic, not its name
    rep = report_of("--log", older, "--log", old, "--log", cur, "--log", renamed)
    assert rep["decisions"]["refuse"] == 8 and rep["decisions"]["allow"] == 1
    assert [s["lines"] for s in rep["sources"]] == [3, 2, 1, 3]
    assert len(rep["per_day"]) == 3
    # a gzip file cut short: what it held up to the cut counts, the cut is a partial line
    data = open(older, "rb").read()
    cut = tmp_path / "cut.gz"
    cut.write_bytes(data[:-12])
    rep = report_of("--log", cut, "--log", cur)
    assert rep["lines"]["partial"] >= 1 and rep["decisions"]["allow"] == 1
    # not gzip after all: one line, exit 2
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"\x1f\x8b\x09" + bytes(64))                      # unknown compression method
    corrupt = tmp_path / "corrupt.gz"                                   # deflate data damaged mid-file
    big = gzip.compress(b"".join(json.dumps(rec(t, user=f"u{i}")).encode() + b"\n" for i in range(2000)))
    corrupt.write_bytes(big[:len(big) // 2] + bytes(b ^ 0x55 for b in big[len(big) // 2:len(big) // 2 + 64])
                        + big[len(big) // 2 + 64:])
    for f in (bad, corrupt):
        r = run_cli("audit", "report", "--log", f)
        assert r.rc == 2 and r.err.count("\n") == 1 and f.name in r.err and "cannot read audit log" in r.err, r


def test_time_windows(tmp_path):
    t = time.time()
    rows = [rec(t - 10 * 86400, user="ten-days"), rec(t - 2 * 86400, user="two-days"),
            rec(t - 2 * 3600, user="two-hours"), rec(t - 60, user="a-minute"),
            {"decision": "refuse", "reason": "undated"}]
    log = write(tmp_path / "a.jsonl", rows)

    def users(*args):
        rep = report_of("--log", log, *args)
        return {r["key"] for r in rep["refusals"]["by_user"]["rows"]}, rep
    assert users()[0] == {"ten-days", "two-days", "two-hours", "a-minute", "(unknown)"}
    assert users("--since", "7d")[0] == {"two-days", "two-hours", "a-minute"}
    assert users("--since", "24h")[0] == {"two-hours", "a-minute"}
    assert users("--since", "90m")[0] == {"a-minute"}
    assert users("--since", "1w", "--until", "1d")[0] == {"two-days"}
    got, rep = users("--until", "90m")
    assert got == {"ten-days", "two-days", "two-hours"} and rep["lines"]["out-of-window"] == 2   # + the undated
    day = time.strftime("%Y-%m-%d", time.gmtime(t - 2 * 86400))
    nxt = time.strftime("%Y-%m-%d", time.gmtime(t - 86400))
    assert users("--since", day, "--until", nxt)[0] == {"two-days"}            # ISO dates, UTC
    assert users("--since", f"{day}T00:00:00+00:00", "--until", f"{nxt}T00:00Z")[0] == {"two-days"}
    got, rep = users("--since", "2000-01-01", "--until", "2000-01-02")
    assert got == set() and rep["decisions_total"] == 0
    r = run_cli("audit", "report", "--log", log, "--since", "2000-01-01", "--until", "2000-01-02")
    assert r.rc == 0 and "no decisions in range" in r.out


@pytest.mark.parametrize("args,words", [
    (("--since", "7x"), "--since"), (("--since", "yesterday"), "--since"), (("--until", "2026-13-40"), "--until"),
    (("--since", "1d", "--until", "2d"), "later than"), (("--since", "0001-01-01"), "out of range"),
    (("--top", "0"), "--top"), (("--since", ""), "--since"), (("--top", "x"), "--top"),
])
def test_bad_arguments_one_line_exit_2(tmp_path, args, words):
    log = write(tmp_path / "a.jsonl", [rec(time.time())])
    r = run_cli("audit", "report", "--log", log, *args)
    assert r.rc == 2 and words in r.err and r.err.count("\n") == 1 and not r.out


def test_unreadable_logs_one_line_exit_2(tmp_path):
    good = write(tmp_path / "a.jsonl", [rec(time.time())])
    locked = write(tmp_path / "locked.jsonl", [rec(time.time())])
    os.chmod(locked, 0o600)
    for args in (("--log", tmp_path / "missing.jsonl"), ("--log", tmp_path), ("--log", good, "--log", tmp_path / "x")):
        r = run_cli("audit", "report", *args)
        assert r.rc == 2 and r.err.count("\n") == 1 and "cannot read audit log" in r.err and not r.out, r
    os.chmod(tmp_path, 0o755)
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                        "sifguard", "audit", "report", "--log", locked], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=60)
    assert p.returncode == 2 and "Permission denied" in p.stderr and p.stderr.count("\n") == 1 and not p.stdout


def test_empty_log_reports_no_decisions(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    r = run_cli("audit", "report", "--log", empty)
    assert r.rc == 0 and "no decisions in range" in r.out
    rep = report_of("--log", empty)
    assert rep["decisions_total"] == 0 and rep["per_day"] == [] and rep["range"] == {"first": None, "last": None}


# --- the report's shape ---------------------------------------------------------------------------

TOP = {"rows", "rest", "distinct_at_least", "exact"}


def test_json_schema_is_stable(tmp_path):
    t = time.time()
    rep = report_of("--log", write(tmp_path / "a.jsonl", [rec(t), rec(t, decision="allow")]), "--top", "3")
    assert rep["schema"] == "sifguard-audit-report/1"
    assert list(rep) == ["schema", "sources", "window", "range", "decisions_total", "decisions", "lines",
                         "refusals", "audits", "top_images", "per_day", "days_other", "counting", "reason_labels"]
    assert list(rep["decisions"]) == ["allow", "refuse", "audit", "deferred", "other"]
    assert list(rep["lines"]) == ["malformed", "partial", "oversized", "not-a-record", "blank", "unattested",
                                  "records", "out-of-window", "undated"]
    assert list(rep["refusals"]) == ["total", "by_reason", "by_user", "by_image", "by_signer", "by_rule", "by_hook"]
    assert list(rep["refusals"]["by_reason"]) == list(CLASSES) == list(rep["audits"]["by_reason"])
    assert list(rep["reason_labels"]) == list(CLASSES)
    for top in [rep["top_images"]] + [rep["refusals"][f"by_{k}"] for k in ("user", "image", "signer", "rule", "hook")]:
        assert set(top) == TOP and all(set(r) == {"key", "count", "error"} for r in top["rows"])
    assert set(rep["per_day"][0]) == {"day", "allow", "refuse", "audit", "deferred", "other"}
    assert set(rep["counting"]) == {"method", "capacity", "exact"}
    assert set(rep["window"]) == {"since", "until"} and set(rep["range"]) == {"first", "last"}


def test_pure_core_takes_dicts_and_problems():
    t = time.time()
    rep = report.build([rec(t), "malformed", rec(t, user="v"), "partial", rec(t, decision="deferred")], top=1)
    assert rep["decisions"]["refuse"] == 2 and rep["decisions"]["deferred"] == 1
    assert rep["lines"]["malformed"] == 1 and rep["lines"]["partial"] == 1
    assert len(rep["refusals"]["by_user"]["rows"]) == 1 and rep["refusals"]["by_user"]["rest"] == 1


def test_table_aligned_truncated_and_inert(tmp_path):
    t = time.time()
    long_image = "/very/" + "long-directory-name/" * 12 + "image.sif"
    rows = [rec(t, image=long_image)] * 3 + [rec(t, image="/x/evil\x1b[2J\n.sif", user="mallory\r\x07")] \
        + [rec(t, decision="allow", image="/ok.sif")] * 12
    log = write(tmp_path / "a.jsonl", rows)
    r = run_cli("audit", "report", "--log", log, env={"COLUMNS": "60"})
    assert r.rc == 0
    assert "\x1b" not in r.out and "\r" not in r.out and "\x07" not in r.out
    lines = r.out.splitlines()
    assert all(len(x) <= 60 for x in lines if x.startswith("  ") and not x.startswith("  sources"))
    assert any("…" in x and x.strip().endswith("3") for x in lines)       # the long path, cut, count kept
    sec = lines[lines.index("Decisions") + 1: lines.index("Decisions") + 7]
    assert sec[0].split() == ["decision", "count"] and {len(x) for x in sec} == {len(sec[0])}   # right-aligned
    assert [x.split()[0] for x in sec[1:]] == ["allow", "refuse", "audit", "deferred", "total"]
    for title in ("Refusals by reason", "Refusals by user", "Refusals by image", "Refusals by signer",
                  "Refusals by rule", "Top images (all decisions)", "Per day"):
        assert title in lines
    assert "unsigned" in r.out and "(no signer)" in r.out


# --- counting in bounded memory -------------------------------------------------------------------

def test_space_saving_exact_under_capacity_and_bounded_over_it():
    import random
    rnd = random.Random(7)
    stream = [f"k{rnd.randrange(50)}" for _ in range(5000)]
    ss = SpaceSaving(100)
    for k in stream:
        ss.add(k)
    assert ss.exact and {r["key"]: r["count"] for r in ss.top(100)} == dict(Counter(stream))
    # over capacity: every key over total/capacity is held; true count within [count - error, count]
    stream = ["hot"] * 3000 + ["warm"] * 800 + [f"cold{i}" for i in range(20000)]
    rnd.shuffle(stream)
    ss = SpaceSaving(50)
    for k in stream:
        ss.add(k)
        assert len(ss.counts) <= 50
    true = Counter(stream)
    assert not ss.exact and [r["key"] for r in ss.top(2)] == ["hot", "warm"]
    for r in ss.top(50):
        assert r["count"] - r["error"] <= true[r["key"]] <= r["count"]
    assert ss.total == len(stream)
    # the guarantees on many streams: skewed, uniform, sorted, cyclic; small capacities
    for seed in range(12):
        rnd = random.Random(seed)
        cap = rnd.choice((1, 2, 7, 30))
        kind = seed % 4
        stream = [f"k{min(int(rnd.paretovariate(1.2)), 500)}" if kind == 0 else f"k{rnd.randrange(200)}"
                  if kind == 1 else f"k{i // 40}" if kind == 2 else f"k{i % 90}" for i in range(4000)]
        ss = SpaceSaving(cap)
        for k in stream:
            ss.add(k)
        true = Counter(stream)
        held = {r["key"]: r for r in ss.top(cap)}
        assert len(held) <= cap and sum(r["count"] for r in held.values()) == len(stream)
        for k, r in held.items():
            assert r["count"] - r["error"] <= true[k] <= r["count"], (seed, k)
        assert all(k in held for k, n in true.items() if n > len(stream) / cap), seed


def _run_measured(args):
    """Run the CLI; (its peak RSS in KiB, seconds, exit status, stdout, stderr) — the child's
    own rusage, reaped with wait4 (not the maximum over every child this process had)."""
    import tempfile
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen([sys.executable, "-m", "sifguard", "audit", "report", *args],
                             stdout=subprocess.PIPE, stderr=err)
        out = p.stdout.read()
        p.stdout.close()
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return usage.ru_maxrss, time.monotonic() - t0, p.returncode, out, err.read().decode()


def _volume_log(path, n):
    """n short synthetic records: one hot image in ten, 50 000 users, 30 000 other images, 30 days."""
    t0 = time.time() - 30 * 86400
    tmpl = ('{"image":"%s","decision":"%s","rule":"default","reason":"group 1 is not signed",'
            '"context":{"user":"user%d"},"time":"%s","hook":"shim"}\n')
    decisions = ("allow", "refuse", "refuse", "audit", "deferred")
    with open(path, "w") as f:
        day = None
        for i in range(n):
            if i % 1000 == 0:
                day = iso(t0 + i * (30 * 86400 / n))
            img = "/hot/image.sif" if i % 10 == 0 else f"/img/{(i * 7919) % 30000}.sif"
            f.write(tmpl % (img, decisions[i % 5], (i * 104729) % 50000, day))
        f.write('{"decision":"refuse","reason":"cut sh')
    return str(path)


def test_a_million_lines_in_bounded_memory(tmp_path):
    """Behaviour only (no timing asserts): every line counted, the hot image found exactly,
    and peak memory for 1 000 000 lines no larger than for 100 000 (plus slack)."""
    small = _volume_log(tmp_path / "small.jsonl", 100_000)
    big = _volume_log(tmp_path / "big.jsonl", 1_000_000)
    rss = {}
    for name, path, n in (("100k", small, 100_000), ("1M", big, 1_000_000)):
        kib, secs, rc, out, err = _run_measured(["--log", path, "--json"])
        assert rc == 0, err
        rss[name] = kib
        rep = json.loads(out)
        assert rep["decisions_total"] == n and rep["lines"]["partial"] == 1
        assert rep["decisions"] == {"allow": n // 5, "refuse": 2 * n // 5, "audit": n // 5, "deferred": n // 5,
                                    "other": 0}
        assert rep["top_images"]["rows"][0] == {"key": "/hot/image.sif", "count": n // 10, "error": 0}
        assert not rep["counting"]["exact"] and len(rep["per_day"]) in (30, 31)
        print(f"\naudit report over {name} lines ({os.path.getsize(path) >> 20} MiB): "
              f"{secs:.1f} s, peak RSS {rss[name] / 1024:.1f} MiB")
    assert rss["1M"] <= rss["100k"] * 1.25 + 8 * 1024, rss


def test_records_of_any_shape_never_break_the_report():
    """Every field a report reads, given every JSON type: counted, never an exception."""
    import itertools
    import random
    rnd = random.Random(11)
    values = [None, 0, -1, 1.5, True, "", "x", "refuse", [], {}, [None], [{}], [{"subject": 5, "status": []}],
              {"user": []}, {"integrity": "fail"}, {"integrity": {"result": "fail", "action": [], "reason": 3}},
              {"revocation": {"result": "fail", "action": "enforce", "reason": None}},
              "2026-12-01T00:00:00Z", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "T" * 100]
    fields = ("image", "operand", "decision", "reason", "rule", "hook", "context", "signers", "revocation",
              "checks", "time")
    recs = []
    for _ in range(3000):
        recs.append({f: rnd.choice(values) for f in fields if rnd.random() < 0.7})
    for f, v in itertools.product(fields, values):
        recs.append({"decision": "refuse", f: v})
    rep = report.build(recs, top=3)
    assert rep["lines"]["records"] == len(recs) and rep["decisions_total"] == len(recs)
    json.dumps(rep)
    rep = report.build(recs, since=0.0, until=2e9, top=3)
    assert rep["decisions_total"] + rep["lines"]["out-of-window"] == len(recs)


def test_reader_line_limit_boundaries(tmp_path):
    """A line of exactly the limit is read; longer ones are skipped whole (never held), and
    the line after them is read intact — also when the long line's tail spans many reads."""
    p = tmp_path / "a.jsonl"
    exact = b'{"a":"' + b"x" * 2 + b'"}'                      # 10 bytes
    with open(p, "wb") as f:
        f.write(b'{"a":1}\n' + exact + b"\n" + b'{"a":"' + b"y" * 100 + b'"}\n' + b'{"b":2}\n' + b"z" * 35)
    got = list(reader.records(str(p), max_line=10))
    assert got == [{"a": 1}, {"a": "xx"}, "oversized", {"b": 2}, "oversized"]
