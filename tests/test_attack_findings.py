"""Red-team findings against the enforcement layer (issue 8), as regression tests.

Open findings are `xfail(strict=True)`: each test states the behaviour the threat model
promises and fails today; when a fix lands the strict xfail turns into an XPASS failure,
so the marker must be removed with the fix. Real parts only: real signed/unsigned SIF
bytes, the real gate/engine, the real controller scan, the real SPANK helper.
"""
import json
import os
import shutil
import subprocess

import pytest

from conftest import APPT, run_cli
from pki import SiteChain
from sifguard.enforce import audit
from sifguard.enforce.core import Verdict
from sifguard.policy.decide import JobContext
from sifguard.policy.loader import load
from sifguard.slurm.config import HookConfig
from sifguard.slurm.controller import decide_job
from sifguard.slurm.gate import Gate
from sifguard.slurm.jobinfo import Job

ONE_GROUP = os.path.join(APPT, "images", "one-group.sif")


@pytest.fixture
def site(tmp_path):
    chain = SiteChain(tmp_path)
    good = tmp_path / "good.sif"
    shutil.copyfile(ONE_GROUP, good)
    assert run_cli("sign", good, "--key", chain.key_pem, "--cert", chain.bundle_pem).rc == 0
    evil = tmp_path / "evil.sif"
    shutil.copyfile(ONE_GROUP, evil)
    admin = tmp_path / "admin"          # an admin-only directory with a permissive rule
    admin.mkdir()
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"version: 1\ntrust: {{roots: [{chain.root_pem}]}}\nrevocation: {{mode: off}}\n"
                      f"audit: {{log: {tmp_path}/audit.jsonl}}\ncache: {{images: off}}\n"
                      f"rules:\n  - name: admin-tools\n    match: {{path: '{admin}/**'}}\n    require: any\n")
    return {"tmp": tmp_path, "good": good, "evil": evil, "admin": admin, "policy": str(policy), "chain": chain}


# --- F1: another mount namespace's file selects the rule of the path it has THERE --------
def _can_unshare():
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


@pytest.fixture
def foreign_ns(site):
    """A process in its own mount namespace where the admin directory holds the attacker's
    unsigned image (what `unshare -rm`, or any running container started with
    `--bind ~/evil:/admin/dir`, gives a job user). Host namespace: the admin dir is empty."""
    if not _can_unshare():
        pytest.skip("needs root and unshare -m to build a second mount namespace")
    a = site["admin"]
    p = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                          f"mount -t tmpfs t {a} && cp {site['evil']} {a}/x.sif && cd {a} && "
                          f"exec 3<{a}/x.sif && echo ready && exec sleep 120"],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        assert not os.path.exists(a / "x.sif")            # not in the caller's namespace
        yield p.pid
    finally:
        p.kill()
        p.wait()


@pytest.mark.parametrize("form", ["/proc/{pid}/root{admin}/x.sif", "/proc/{pid}/fd/3", "/proc/{pid}/cwd/x.sif",
                                  "/proc/self/root/proc/{pid}/root{admin}/x.sif"])
def test_image_from_another_mount_namespace_cannot_pick_the_admin_rule(site, foreign_ns, form):
    operand = form.format(pid=foreign_ns, admin=site["admin"])
    gate = Gate(load(site["policy"]), "shim")
    adm = gate.admit_image(operand, JobContext(user="u"), str(site["tmp"]), pin_image=True)
    if adm.pinned_fd is not None:
        os.close(adm.pinned_fd)
    assert not adm.allowed, f"{operand} allowed as {adm.verdict and adm.verdict.image} by rule " \
                            f"{adm.verdict and adm.verdict.rule}"


def test_control_the_admin_rule_is_real(site):
    """Control for F1: an admin-placed file under the admin path is allowed unsigned (so F1's
    refusal expectation is about the namespace trick, not about the rule)."""
    shutil.copyfile(site["evil"], site["admin"] / "tool.sif")
    adm = Gate(load(site["policy"]), "shim").admit_image(str(site["admin"] / "tool.sif"), JobContext(user="u"),
                                                         "/", pin_image=True)
    assert adm.allowed and adm.verdict.rule == "admin-tools"
    os.close(adm.pinned_fd)
    adm = Gate(load(site["policy"]), "shim").admit_image(str(site["evil"]), JobContext(user="u"), "/")
    assert not adm.allowed


# --- F2/F3: the controller prolog and runtimes reached WITHOUT the shim --------------------
def decide(site, script, env=None):
    job = Job("7", env_complete=True, user="u", uid=os.getuid(), gid=os.getgid(), work_dir=str(site["tmp"]),
              script="#!/bin/bash\n" + script, env=env or {"HOME": str(site["tmp"]), "PATH": "/usr/bin:/bin"})
    cfg = HookConfig(policy=site["policy"], shim_dir=str(site["tmp"] / "shim"))
    return decide_job(cfg, job, Gate(load(site["policy"]), "prolog-slurmctld"))


@pytest.mark.parametrize("script", [
    '/usr/bin/apptainer exec "$1" true\n',
    'IMG=$(cat list)\n/usr/bin/singularity run $IMG\n',
    'PATH=/usr/bin apptainer exec "$1" true\n',
    'export PATH=/usr/bin\napptainer exec "$1" true\n',
    'env -i apptainer exec "$1" true\n',
    'srun env PATH=/usr/bin apptainer exec "$1" true\n',
    'env - apptainer exec good.sif true\n',                     # GNU env: a lone `-` is -i
    'flock /tmp/l /usr/bin/apptainer exec good.sif true\n',     # unmodelled wrapper, runtime by path
])
def test_direct_runtime_is_refused_even_when_the_image_is_uncertain(site, script):
    assert decide(site, script), "deferred: the real runtime would run an image no hook decides"


@pytest.mark.parametrize("script", [
    "command -p apptainer exec good.sif true\n",
    "builtin command -p apptainer exec good.sif true\n",
    "command -p -- singularity run good.sif\n",
    "env -u PATH apptainer exec good.sif true\n",
    "env --unset=PATH apptainer exec good.sif true\n",
    "env -uPATH apptainer exec good.sif true\n",
])
def test_runtime_lookup_that_skips_the_shim_is_direct(site, script):
    # the image is signed NOW; the job replaces it after the prolog and nothing re-checks it
    reasons = decide(site, script)
    assert reasons and "runtime.direct" in reasons[0], reasons


def test_control_same_lines_by_name_and_by_path_static(site):
    """Holds: by name with a static signed image passes; the runtime by a static path refuses."""
    assert decide(site, "apptainer exec good.sif true\n") == []
    r = decide(site, "PATH=/usr/bin apptainer exec good.sif true\n")
    assert r and "runtime.direct" in r[0]
    r = decide(site, "env -i apptainer exec good.sif true\n")
    assert r and "runtime.direct" in r[0]


# --- F4: the SPANK helper passes wrappers that exec the real runtime --------------------
@pytest.fixture
def spank(site):
    tmp = site["tmp"]
    rtdir = tmp / "rt"
    rtdir.mkdir()
    real = rtdir / "apptainer"
    real.write_text("#!/bin/sh\nexit 0\n")
    os.chmod(real, 0o755)
    r = run_cli("slurm", "install", "--prefix", tmp / "hooks", "--policy", site["policy"], "--apptainer", real,
                "--singularity", real, "--no-spank", "--slurm-conf", tmp / "slurm.conf")
    assert r.rc == 0, r
    hooks = tmp / "hooks"

    def run(*task):
        return subprocess.run([str(hooks / "sifguard-spank-check"), "--config", str(hooks / "sifguard-slurm.json"),
                               "--job-id", "0", "--uid", str(os.getuid()), "--gid", str(os.getgid()), "--cwd",
                               str(tmp), "--path", "/usr/bin:/bin", "--", *map(str, task)],
                              capture_output=True, text=True, timeout=60)
    return run, real


@pytest.mark.parametrize("wrapper", [
    ["env", "{rt}"], ["/usr/bin/env", "{rt}"], ["nice", "{rt}"], ["env", "PATH={rtdir}", "apptainer"],
    ["env", "-S", "{rt} exec"], ["timeout", "100", "{rt}"],
])
def test_spank_refuses_wrappers_that_run_the_real_runtime(site, spank, wrapper):
    run, real = spank
    words = [w.format(rt=real, rtdir=real.parent) for w in wrapper]
    if words[-1].endswith(" exec"):
        words[-1] += f" {site['evil']} true"
        p = run(*words)
    else:
        p = run(*words, "exec", site["evil"], "true")
    assert p.returncode == 1, f"task {words} would start the real runtime on the unsigned image"


def test_control_spank_refuses_the_runtime_by_path(site, spank):
    run, real = spank
    assert run(real, "exec", site["evil"], "true").returncode == 1
    assert run("apptainer", "exec", site["evil"], "true").returncode == 0    # bare name: the shim decides
    assert run(site["evil"]).returncode == 1


# --- F5: the shim's syslog audit record loses its verdict behind a long argv -----------
@pytest.mark.parametrize("arg_len", [8000, 20000, 100000])
def test_syslog_audit_record_keeps_the_decision_whatever_the_argv(monkeypatch, arg_len):
    lines = []

    def denied(path, line):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(audit, "_append", denied)
    import syslog
    monkeypatch.setattr(syslog, "syslog", lambda prio, msg: lines.append(msg))
    v = Verdict(image="/home/u/evil.sif", reason="group 1 is not signed")
    audit.write_decision("/var/log/sifguard/audit.jsonl", v, hook="shim",
                         argv=["apptainer", "exec", "--env", "X=" + "A" * arg_len, "/home/u/evil.sif", "true"])
    assert lines
    assert '"decision":"refuse"' in lines[0] and '"image":"/home/u/evil.sif"' in lines[0], lines[0][-200:]


def test_control_short_argv_syslog_record_is_complete(monkeypatch):
    lines = []
    monkeypatch.setattr(audit, "_append", lambda p, l: (_ for _ in ()).throw(PermissionError(13, "denied")))
    import syslog
    monkeypatch.setattr(syslog, "syslog", lambda prio, msg: lines.append(msg))
    audit.write_decision("/x/audit.jsonl", Verdict(image="/i.sif"), hook="shim", argv=["apptainer", "run", "/i.sif"])
    rec = json.loads(lines[0])
    assert rec["decision"] == "refuse" and rec["allowed"] is False


# --- F8: the audit log is only ever a regular file in a root-only directory -------------
def test_audit_log_planted_as_fifo_or_in_a_user_writable_directory(tmp_path, monkeypatch):
    import syslog
    lines = []
    monkeypatch.setattr(syslog, "syslog", lambda prio, msg: lines.append(msg))
    fifo_dir = tmp_path / "logs"
    fifo_dir.mkdir(mode=0o755)
    os.mkfifo(fifo_dir / "audit.jsonl")
    with pytest.raises(audit.AuditError):            # never blocks on the FIFO, never writes into it
        audit.write_event(str(fifo_dir / "audit.jsonl"), decision="refuse", reason="x")
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    if os.geteuid() == 0:
        audit.write_event(str(open_dir / "audit.jsonl"), decision="refuse", reason="x")
        assert not (open_dir / "audit.jsonl").exists() and lines     # to syslog, not the user-writable place
