"""`sifguard audit report --journal/--journal-dir`: the records a hook running as the job's
user logged to syslog because it cannot write the root-owned file, read back from a real
journald (a namespace instance of systemd-journald started here, its files read with
journalctl), each checked against the uid journald saw send it."""
import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import run_cli
from sifguard.audit import journal

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOURNALD = "/lib/systemd/systemd-journald"
NOBODY = 65534


def entry(message, uid):
    return {"MESSAGE": message, "_UID": str(uid), "SYSLOG_IDENTIFIER": "sifguard"}


# --- the pure part: which entries count -----------------------------------------------------
@pytest.mark.parametrize("e,want", [
    (entry('{"decision":"refuse","uid":1000}', 1000), "record"),
    (entry('{"decision":"refuse","uid":0}', 0), "record"),
    (entry('{"decision":"refuse","uid":0}', 1000), "unattested"),        # a user claiming root's record
    (entry('{"decision":"allow","uid":1000}', 0), "unattested"),         # root's process, another uid stamped
    (entry('{"decision":"refuse"}', 1000), "unattested"),                # no uid stamped: not our writer
    (entry('{"decision":"refuse","uid":"1000"}', 1000), "unattested"),   # a string is not the stamp
    (entry('{"decision":"refuse","uid":true}', 1), "unattested"),
    ({"MESSAGE": '{"decision":"refuse","uid":1000}'}, "unattested"),    # journald's _UID missing
    (entry("not json at all", 1000), "malformed"),
    (entry("[1, 2]", 1000), "not-a-record"),
    (entry("", 1000), "blank"),
    (entry(list(b'{"decision":"refuse","uid":7}'), 7), "record"),       # journald's array form
    (entry([0xff, 0xfe], 7), "malformed"),
    (entry(None, 7), "malformed"),
    (entry(list(range(300)), 7), "malformed"),                          # not bytes
])
def test_attest(e, want):
    got = journal.attest(e)
    assert (got if isinstance(got, str) else "record") == want, got


def test_a_user_cannot_pin_a_record_on_another_user():
    names = {1000: "alice", 1001: "mallory"}.get
    mine = '{"decision":"refuse","uid":1001,"context":{"user":"mallory"}}'
    framed = '{"decision":"refuse","uid":1001,"context":{"user":"alice"}}'
    assert isinstance(journal.attest(entry(mine, 1001), names), dict)
    assert journal.attest(entry(framed, 1001), names) == "unattested"
    assert isinstance(journal.attest(entry(framed, 1001), lambda uid: None), dict)    # uid unknown here
    numeric = '{"decision":"refuse","uid":1001,"context":{"user":"1001"}}'              # unknown where it ran
    assert isinstance(journal.attest(entry(numeric, 1001), names), dict)
    by_root = '{"decision":"refuse","uid":0,"context":{"user":"alice"}}'                 # root's hooks judge others
    assert isinstance(journal.attest(entry(by_root, 0), names), dict)
    assert journal.login_name(0) == "root" and journal.login_name(2 ** 40) is None


def test_command_pushes_the_window_down():
    cmd = journal.command("/j", 1000.7, 2000.2)
    assert cmd[0] == "journalctl" and "--output=json" in cmd and "--directory=/j" in cmd
    assert "--since=@1000" in cmd and "--until=@2001" in cmd and cmd[-1] == "SYSLOG_IDENTIFIER=sifguard"
    assert not any(a.startswith(("--directory", "--since", "--until")) for a in journal.command(None, None, None))


def test_journalctl_missing_is_one_line(tmp_path):
    os.mkdir(tmp_path / "j")
    r = run_cli("audit", "report", "--log", _empty(tmp_path), "--journal-dir", tmp_path / "j",
                env={"PATH": str(tmp_path)})
    assert r.rc == 2 and r.err.count("\n") == 1 and "cannot run journalctl" in r.err and not r.out, r
    r = run_cli("audit", "report", "--log", _empty(tmp_path), "--journal-dir", tmp_path / "none")
    assert r.rc == 2 and "not a directory" in r.err and r.err.count("\n") == 1, r


def _empty(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("")
    return p


# --- a real journald ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def journald():
    """systemd-journald as namespace `sgtest<pid>` (its own sockets and files; the machine's
    journal untouched). Syslog goes to /dev/log: where the machine has none, /dev/log is a
    symlink to the namespace's socket while the tests run; where it has one, each writer runs
    in its own mount namespace with the namespace's socket bound over /dev/log."""
    if os.geteuid() != 0 or not os.access(JOURNALD, os.X_OK) or not shutil.which("journalctl"):
        pytest.skip("needs root and systemd-journald/journalctl")
    ns = f"sgtest{os.getpid()}"
    run = f"/run/systemd/journal.{ns}"
    proc = subprocess.Popen([JOURNALD, ns], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    made_link = False
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(f"{run}/dev-log"):
            assert proc.poll() is None and time.monotonic() < deadline, "systemd-journald did not start"
            time.sleep(0.05)
        if not os.path.lexists("/dev/log"):
            os.symlink(f"{run}/dev-log", "/dev/log")
            made_link = True
        yield {"ns": ns, "devlog": f"{run}/dev-log", "bind": not made_link}
    finally:
        if made_link and os.path.islink("/dev/log"):
            os.unlink("/dev/log")
        proc.terminate()
        proc.wait(10)
        with open("/etc/machine-id") as f:
            mid = f.read().strip()
        for d in (f"/var/log/journal/{mid}.{ns}", f"/run/log/journal/{mid}.{ns}", run):
            shutil.rmtree(d, ignore_errors=True)


def _as(jd, uid, argv, **kw):
    """argv as uid (no groups), its syslog reaching the test journald."""
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]
    if jd["bind"]:
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c",
               f"mount --bind {shlex.quote(jd['devlog'])} /dev/log && exec {shlex.join(map(str, cmd))}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO, **kw)


def _journal_dir(jd):
    with open("/etc/machine-id") as f:
        mid = f.read().strip()
    found = glob.glob(f"/var/log/journal/{mid}.{jd['ns']}") + glob.glob(f"/run/log/journal/{mid}.{jd['ns']}")
    return found[0] if found else None


def _entries(jd, want, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = _journal_dir(jd)
        if d:
            out = subprocess.run(["journalctl", f"--directory={d}", "--output=json", "SYSLOG_IDENTIFIER=sifguard"],
                                 capture_output=True, text=True, timeout=30).stdout
            if len(out.splitlines()) >= want:
                return d
        time.sleep(0.1)
    pytest.fail(f"journald did not store {want} entries in {timeout} s")


def test_shim_fallback_records_are_reported(journald, tmp_path):
    """The real writer (sifguard/enforce/audit.py) as nobody: the root-owned log refuses it, so
    its record goes to syslog → journald. A forged record (another uid stamped) and a
    non-record sent with the same identifier are not counted, nor one that names another user.
    (The writer alone runs as nobody: this machine's Python for root lives where nobody
    cannot enter, and the writer needs nothing but the standard library.)"""
    base = tempfile.mkdtemp(prefix="sg-journal-")
    try:
        os.chmod(base, 0o755)
        img = os.path.join(base, "unsigned.sif")
        log = os.path.join(base, "audit.jsonl")
        with open(log, "w") as f:          # root's: nobody cannot append
            f.write(json.dumps({"decision": "allow", "image": "/ok.sif", "uid": 0,
                                "time": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())}) + "\n")
        os.chmod(log, 0o644)
        since = time.time() - 1
        writer = ("import sys; from sifguard.enforce import audit; "
                  "audit.write_event(sys.argv[1], decision='refuse', reason='group 1 is not signed', image=sys.argv[2], "
                  "hook='shim', context={'user': 'nobody'})")
        p = _as(journald, NOBODY, [sys.executable, "-c", writer, log, img])
        assert p.returncode == 0 and not p.stderr, p
        with open(log) as f:
            assert len(f.readlines()) == 1              # not appended: it went to syslog
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        forged = json.dumps({"decision": "refuse", "image": "/framed.sif", "uid": 1000, "time": now,
                             "context": {"user": "alice"}})
        code = ("import syslog, sys; syslog.openlog('sifguard', syslog.LOG_PID, syslog.LOG_AUTHPRIV); "
                "syslog.syslog(syslog.LOG_NOTICE, sys.argv[1])")
        framing = json.dumps({"decision": "refuse", "image": "/framed.sif", "uid": NOBODY, "time": now,
                              "context": {"user": "root"}})
        for text in (forged, framing):
            assert _as(journald, NOBODY, [sys.executable, "-c", code, text]).returncode == 0
        assert _as(journald, NOBODY, [sys.executable, "-c", code, "hello, not a record"]).returncode == 0
        d = _entries(journald, 4)

        r = run_cli("audit", "report", "--log", log, "--journal-dir", d, "--since", "1h", "--json")
        assert r.rc == 0, r
        rep = json.loads(r.out)
        assert [s["path"] for s in rep["sources"]] == [log, f"journal:{d}"]
        assert rep["decisions"]["allow"] == 1 and rep["decisions"]["refuse"] == 1, rep["decisions"]
        assert rep["lines"]["unattested"] == 2 and rep["lines"]["malformed"] == 1, rep["lines"]
        assert [row["key"] for row in rep["refusals"]["by_image"]["rows"]] == [img]
        assert [row["key"] for row in rep["refusals"]["by_user"]["rows"]] == ["nobody"]
        assert rep["refusals"]["by_reason"]["unsigned"] == 1, rep["refusals"]["by_reason"]

        # the window reaches journalctl: nothing before `since` is read back
        r = run_cli("audit", "report", "--log", log, "--journal-dir", d, "--until",
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since - 60)), "--json")
        assert r.rc == 0 and json.loads(r.out)["sources"][1]["lines"] == 0, r

        table = run_cli("audit", "report", "--log", log, "--journal-dir", d)
        assert table.rc == 0 and "  sources: " + log in table.out and ", journal:/" in table.out, table
        assert "unattested 2" in table.out and "malformed 1" in table.out, table
        assert "add --journal" not in table.out
        plain = run_cli("audit", "report", "--log", log)
        assert plain.rc == 0 and "add --journal" in plain.out, plain
    finally:
        shutil.rmtree(base, ignore_errors=True)
