"""Enforcement on a real single-node Slurm cluster (slurmctld + slurmd + munge, started
by tests/slurm/cluster.sh), jobs submitted as the unprivileged user `nobody`.

Apptainer itself is not installable here: the "real" runtime the shim execs is a
stand-in (written by cluster.sh) that records its argv, refuses a non-SIF image
operand, and for `exec IMAGE CMD…` runs CMD on the host.
"""
import hashlib
import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import APPT, Server, free_port, run_cli

pytestmark = pytest.mark.slurm
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(ROOT, "tests", "slurm", "cluster.sh")

if os.geteuid() != 0:
    pytest.skip("the Slurm cluster tests need root (CI runs them as root)", allow_module_level=True)


def _policy(w, extra_rules=""):
    (w / "policy.yaml").write_text(f"""version: 1
trust: {{roots: [{w}/root.pem]}}
revocation:
  mode: enforce
  timeout: 2
  cache_dir: {w}/revcache
cache: {{images: {w}/imgcache}}
audit: {{log: {w}/audit.jsonl}}
rules:
  - name: audit-trial
    match: {{path: "{w}/jobs/trial/*"}}
    action: audit
{extra_rules}  - name: default
    require: signed
""")
    os.chmod(w / "policy.yaml", 0o644)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    w = tmp_path_factory.mktemp("slurm")
    os.chmod(w, 0o755)
    os.chmod(w.parent, 0o755)
    os.chmod(w.parent.parent, 0o755)   # /tmp/pytest-of-root/... : jobs run as nobody
    jobs = w / "jobs"
    (jobs / "trial").mkdir(parents=True)
    os.chmod(jobs, 0o1777)
    os.chmod(jobs / "trial", 0o755)
    port = free_port()
    ca = w / "ca"
    assert run_cli("ca", "init", "--ca", ca, "--name", "Cluster Site", "--url", f"http://127.0.0.1:{port}").rc == 0
    shutil.copyfile(ca / "root.pem", w / "root.pem")
    os.chmod(w / "root.pem", 0o644)
    for who in ("builder", "revoked"):
        assert run_cli("ca", "issue", "--ca", ca, "--cn", who, "--out-key", w / f"{who}.key", "--out", w / f"{who}.pem").rc == 0
    foreign = w / "foreign"
    assert run_cli("ca", "init", "--ca", foreign, "--name", "Elsewhere").rc == 0
    assert run_cli("ca", "issue", "--ca", foreign, "--cn", "stranger", "--out-key", w / "f.key", "--out", w / "f.pem").rc == 0
    src = os.path.join(APPT, "images", "one-group.sif")

    def img(name, key=None, cert=None):
        p = jobs / name
        shutil.copyfile(src, p)
        if key:
            assert run_cli("sign", p, "--key", key, "--cert", cert).rc == 0
        os.chmod(p, 0o644)
        return p
    img("signed.sif", w / "builder.key", w / "builder.pem")
    import pwd
    nobody = pwd.getpwnam("nobody")
    os.chown(img("swap.sif", w / "builder.key", w / "builder.pem"), nobody.pw_uid, nobody.pw_gid)   # the user's own file
    img("unsigned.sif")
    img("trial/unsigned.sif")
    img("revoked.sif", w / "revoked.key", w / "revoked.pem")
    img("foreign.sif", w / "f.key", w / "f.pem")
    t = img("tampered.sif", w / "builder.key", w / "builder.pem")
    with open(t, "r+b") as f:
        f.seek(36864)
        f.write(b"X")
    assert run_cli("ca", "revoke", "--ca", ca, "--cert", w / "revoked.pem", "--reason", "keyCompromise").rc == 0
    srv = Server(ca, port=port)
    _policy(w, extra_rules=f"""  - name: lenient-elsewhere
    match: {{path: "{jobs}/ctx/*", partition: nowhere}}
    action: audit
""")
    (jobs / "ctx").mkdir()
    shutil.copyfile(jobs / "unsigned.sif", jobs / "ctx" / "unsigned.sif")
    os.chmod(jobs / "ctx", 0o755)
    up = subprocess.run([CLUSTER, "up", "--policy", str(w / "policy.yaml")], capture_output=True, text=True, timeout=600)
    if up.returncode != 0:
        srv.stop()
        pytest.fail(f"cluster up failed: {up.stderr[-2000:]}")
    env = dict(os.environ)
    for line in up.stdout.splitlines():
        if line.startswith("export "):
            k, v = line[7:].split("=", 1)
            env[k] = v
    yield {"w": w, "jobs": jobs, "env": env, "srv": srv}
    subprocess.run([CLUSTER, "down"], capture_output=True, timeout=120)
    srv.stop()


def submit(c, name, body, out=None):
    script = c["jobs"] / f"{name}.sh"
    script.write_text("#!/bin/bash\n" + body + "\n")
    os.chmod(script, 0o755)
    p = subprocess.run(["runuser", "-u", "nobody", "--", "env", f"SLURM_CONF={c['env']['SLURM_CONF']}",
                        f"SIFGUARD_REAL_APPTAINER={c['env']['SIFGUARD_REAL_APPTAINER']}", "sbatch", "--parsable",
                        "-D", str(c["jobs"]), "-o", str(out or c["jobs"] / f"{name}.out"), str(script)],
                       capture_output=True, text=True, env=c["env"], timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def wait(c, ids, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        q = subprocess.run(["squeue", "-h", "-j", ",".join(ids)], capture_output=True, text=True, env=c["env"]).stdout
        if not q.strip():
            return
        time.sleep(0.3)
    pytest.fail(f"jobs {ids} did not finish in {timeout} s")


def job(c, jid):
    out = subprocess.run(["scontrol", "show", "job", "-o", jid], capture_output=True, text=True, env=c["env"]).stdout
    return out


def output(c, name):
    try:
        return (c["jobs"] / f"{name}.out").read_text()
    except OSError:
        return ""


@pytest.fixture(scope="module")
def results(cluster):
    c = cluster
    J = c["jobs"]
    bodies = {
        "ok": f"apptainer exec {J}/signed.sif echo RAN-OK",
        "unsigned": f"apptainer exec {J}/unsigned.sif echo RAN-BAD",
        "tampered": f"IMG={J}/tampered.sif\nsingularity exec $IMG echo RAN-BAD",
        "revoked": f"apptainer run --nv {J}/revoked.sif\necho RAN-BAD",
        "foreign": f"srun apptainer exec -B /tmp {J}/foreign.sif echo RAN-BAD",
        "trial": f"apptainer exec {J}/trial/unsigned.sif echo RAN-TRIAL",
        "hidden": f"IMG=$(cat {J}/which)\napptainer exec $IMG echo RAN-HIDDEN",
        "bypass": f"srun $SIFGUARD_REAL_APPTAINER exec $(cat {J}/which) echo RAN-BYPASS",
        "swap": (f"apptainer exec {J}/swap.sif sh -c 'cp {J}/unsigned.sif {J}/swap.sif; "
                 "for fd in /proc/self/fd/*; do case $(readlink $fd) in *sifguard-verified*|*/store/objects/*) "
                 "echo SEALED $(sha256sum < $fd | cut -c1-64);; esac; done; echo RAN-SWAP'"),
    }
    private = c["w"] / "root-only"
    private.mkdir(mode=0o700)
    shutil.copyfile(J / "signed.sif", private / "secret.sif")
    bodies["rootonly"] = f"apptainer exec {private}/secret.sif echo RAN-ROOTONLY"
    (J / "which").write_text(f"{J}/unsigned.sif\n")
    os.chmod(J / "which", 0o644)
    swap_hash = hashlib.sha256((J / "swap.sif").read_bytes()).hexdigest()
    ids = {name: submit(c, name, body) for name, body in bodies.items()}
    # a refused job whose output path is somewhere only root may write: nothing is created there
    ids["evilout"] = submit(c, "evilout", f"apptainer exec {J}/unsigned.sif true", out=private / "planted.out")
    wait(c, list(ids.values()))
    return {"ids": ids, "swap_hash": swap_hash}


def state(c, jid):
    import re
    return re.search(r"JobState=(\S+)", job(c, jid)).group(1)


def test_signed_image_runs(cluster, results):
    assert state(cluster, results["ids"]["ok"]) == "COMPLETED"
    assert "RAN-OK" in output(cluster, "ok").split()
    log = (cluster["env"]["SIFGUARD_CLUSTER_DIR"] + "/standin.log")
    assert "/store/objects/" in open(log).read()   # the runtime got the store's verified copy


@pytest.mark.parametrize("name,why", [("unsigned", "not signed"), ("tampered", "changed"),
                                      ("revoked", "revoked"), ("foreign", "trusted root")])
def test_refused_with_reason_visible(cluster, results, name, why):
    jid = results["ids"][name]
    out = output(cluster, name)
    assert "RAN-BAD" not in out
    assert state(cluster, jid) == "CANCELLED"                 # terminal, not requeued
    assert "sifguard: job" in out and "refused" in out and why in out, out
    assert "AdminComment=sifguard" in job(cluster, jid)


def test_hooks_read_and_write_with_the_users_rights(cluster, results):
    """The root prolog opens images and writes refusals as the job's user: a job cannot make
    it verify a root-only file, nor create a file where only root may write."""
    out = output(cluster, "rootonly")
    assert "RAN-ROOTONLY" not in out and "cannot read it" in out
    assert state(cluster, results["ids"]["evilout"]) == "CANCELLED"
    assert not (cluster["w"] / "root-only" / "planted.out").exists()


def test_audit_rule_lets_job_run_and_logs(cluster, results):
    assert "RAN-TRIAL" in output(cluster, "trial")
    rows = [json.loads(line) for line in open(cluster["w"] / "audit.jsonl")]
    assert any(r.get("decision") == "audit" and r.get("rule") == "audit-trial" for r in rows)


def test_image_behind_variable_caught_at_runtime(cluster, results):
    out = output(cluster, "hidden")
    assert "RAN-HIDDEN" not in out and "sifguard: refused" in out
    rows = [json.loads(line) for line in open(cluster["w"] / "audit.jsonl")]
    assert any(r.get("decision") == "deferred" and r.get("job") == results["ids"]["hidden"] for r in rows)


def test_absolute_runtime_via_srun_refused_by_spank(cluster, results):
    out = output(cluster, "bypass")
    assert "RAN-BYPASS" not in out.splitlines() and ("sifguard: task refused" in out or "sifguard: job" in out)


def test_swapped_file_after_verification_does_not_run(cluster, results):
    out = output(cluster, "swap")
    assert "RAN-SWAP" in out
    sealed = [line.split()[1] for line in out.splitlines() if line.startswith("SEALED")]
    assert sealed == [results["swap_hash"]]          # what ran is the verified bytes, not the swapped file
    assert hashlib.sha256((cluster["jobs"] / "swap.sif").read_bytes()).hexdigest() != results["swap_hash"]


def test_node_never_drained(cluster, results):
    st = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=cluster["env"]).stdout.split()
    assert set(st) <= {"idle", "mix", "alloc"}, st


def test_interactive_srun_job_refused(cluster, results):
    """`srun` as its own job (no batch script): refused by the controller prolog (its
    Command) or, at the latest, by the SPANK hook when the task starts. The runtime
    called by path is refused even for a signed image (policy runtime.direct: refuse —
    the image would be opened again after the check); by name it reaches the shim,
    which verifies and pins it."""
    J = cluster["jobs"]
    real = cluster["env"]["SIFGUARD_REAL_APPTAINER"]
    for image in ("unsigned.sif", "signed.sif"):
        p = _srun(cluster, real, "exec", f"{J}/{image}", "echo", "RAN-SRUN")
        assert p.returncode != 0 and "RAN-SRUN" not in p.stdout
        assert "sifguard" in p.stderr, p.stderr
    p = _srun(cluster, "apptainer", "exec", f"{J}/signed.sif", "echo", "RAN-SRUN-OK")
    assert p.returncode == 0 and "RAN-SRUN-OK" in p.stdout, p.stderr
    p = _srun(cluster, "apptainer", "exec", f"{J}/unsigned.sif", "echo", "RAN-SRUN-BAD")
    assert p.returncode != 0 and "RAN-SRUN-BAD" not in p.stdout and "sifguard: refused" in p.stderr


def _srun(cluster, *argv, env=None, timeout=120):
    J = cluster["jobs"]
    extra = [f"{k}={v}" for k, v in (env or {}).items()]
    return subprocess.run(["runuser", "-u", "nobody", "--", "env", f"SLURM_CONF={cluster['env']['SLURM_CONF']}",
                           *extra, "srun", "-D", str(J), *argv],
                          capture_output=True, text=True, timeout=timeout, env=cluster["env"])


def test_shim_takes_the_partition_from_slurm_not_the_environment(cluster, results):
    """Class 3: a task that claims another partition in its environment gets the rules of
    the partition Slurm says it runs in (here: not the lenient one)."""
    J = cluster["jobs"]
    (J / "which-ctx").write_text(f"{J}/ctx/unsigned.sif\n")
    os.chmod(J / "which-ctx", 0o644)
    p = _srun(cluster, "bash", "-c", f"export SLURM_JOB_PARTITION=nowhere SLURM_JOB_ID=1; "
              f"apptainer exec $(cat {J}/which-ctx) echo RAN-CTX")
    assert p.returncode != 0 and "RAN-CTX" not in p.stdout and "not signed" in p.stderr, p.stderr
    assert "rule 'default'" in p.stderr and "lenient" not in p.stderr


@pytest.mark.parametrize("what", ["fifo", "device", "symlink-to-runtime"])
def test_task_argv0_is_looked_at_safely(cluster, results, what):
    """Class 8: the SPANK hook opens argv[0] only as the user, non-blocking, and only
    regular files — a FIFO cannot hang the launch, a device is not opened by root — and
    a symlink to the runtime is still the runtime."""
    J = cluster["jobs"]
    if what == "fifo":
        if not (J / "fifo").exists():
            os.mkfifo(J / "fifo")
        os.chmod(J / "fifo", 0o777)
        argv = ["./fifo"]
    elif what == "device":
        argv = ["/dev/zero"]
    else:
        link = J / "innocent"
        if not link.exists():
            os.symlink(cluster["env"]["SIFGUARD_REAL_APPTAINER"], link)
        argv = [str(link), "exec", str(J / "signed.sif"), "echo", "RAN-LINK"]
    t = time.monotonic()
    p = _srun(cluster, *argv, timeout=120)
    assert time.monotonic() - t < 60
    assert p.returncode != 0
    if what == "symlink-to-runtime":
        assert "RAN-LINK" not in p.stdout and "runs the container runtime directly" in p.stderr, p.stderr
    else:
        assert "sifguard" not in p.stderr, p.stderr     # not a container task: Slurm's own exec error


@pytest.mark.parametrize("how", ["env-wrapper", "nice-wrapper", "path-prefix-trick"])
def test_runtime_reached_around_the_shim_is_refused(cluster, results, how):
    """Red-team F4/F6: a wrapper that execs the real runtime, or a PATH that merely starts
    with the shim directory's name, does not get past the SPANK hook."""
    J = cluster["jobs"]
    real = cluster["env"]["SIFGUARD_REAL_APPTAINER"]
    if how == "env-wrapper":
        p = _srun(cluster, "env", real, "exec", f"{J}/signed.sif", "echo", "RAN-AROUND")
    elif how == "nice-wrapper":
        p = _srun(cluster, "nice", real, "exec", f"{J}/signed.sif", "echo", "RAN-AROUND")
    else:
        shim = os.path.join(cluster["env"]["SIFGUARD_CLUSTER_DIR"], "hooks", "shim")
        trick = f"{shim}/../../bin:/usr/bin:/bin"     # starts with the shim's name, resolves elsewhere
        p = _srun(cluster, f"--export=PATH={trick}", "apptainer", "exec", f"{J}/unsigned.sif", "echo", "RAN-AROUND")
    assert p.returncode != 0 and "RAN-AROUND" not in p.stdout, (p.stdout, p.stderr)
    assert "sifguard" in p.stderr


def test_many_tasks_run_one_verified_store_copy(cluster, results):
    """Issue 9: `srun -n 8 apptainer exec IMG` of a 256 MiB image — every task runs the
    store's copy, which the stager staged once (the controller prolog staged it before the
    tasks started; the tasks found it warm); then the original is swapped for an unsigned
    image of the same size with its mtime restored: re-verified and refused."""
    J, D = cluster["jobs"], cluster["env"]["SIFGUARD_CLUSTER_DIR"]
    w = cluster["w"]
    big = J / "big.sif"
    _make_sif(big, 256)
    assert run_cli("sign", big, "--key", w / "builder.key", "--cert", w / "builder.pem").rc == 0
    os.chmod(big, 0o644)
    want = hashlib.sha256(big.read_bytes()).hexdigest()
    log = D + "/standin.log"
    before = len(open(log).read().splitlines())
    p = _srun(cluster, "-n", "8", "-O", "apptainer", "exec", str(big), "echo", "RAN-MANY", timeout=300)
    assert p.returncode == 0 and p.stdout.split().count("RAN-MANY") == 8, (p.stdout, p.stderr)
    ran = [ln for ln in open(log).read().splitlines()[before:] if ln.startswith("image ")]
    assert len(ran) == 8 and all("/store/objects/" in ln and ln.endswith(f"sha256={want}") for ln in ran), ran
    digest = ran[0].split("/store/objects/")[1].split(".sif")[0]
    staged = [ln for ln in open(D + "/log/stager.log") if f" staged {digest[:16]}" in ln]
    assert len(staged) == 1, staged                     # one copy, one hash pass, for 1 prolog + 8 tasks
    # swap: same size, mtime restored (ctime cannot be restored: the index misses)
    st = os.stat(big)
    unsigned = J / "big-unsigned.sif"
    _make_sif(unsigned, 256)
    data = unsigned.read_bytes()
    data = data + b"\0" * (st.st_size - len(data)) if len(data) < st.st_size else data[:st.st_size]
    with open(big, "r+b") as f:
        f.write(data)
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(big).st_size == st.st_size and os.stat(big).st_mtime_ns == st.st_mtime_ns
    p = _srun(cluster, "-n", "2", "-O", "apptainer", "exec", str(big), "echo", "RAN-SWAPPED", timeout=300)
    assert p.returncode != 0 and "RAN-SWAPPED" not in p.stdout and "sifguard" in p.stderr, (p.stdout, p.stderr)


def _make_sif(path, mib):
    import struct
    from sifguard.sif.image import NewObject, create
    part = str(path) + ".part"
    with open(part, "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(mib):
            f.write(block)
    create(str(path), [NewObject(0x4001, data=b"Bootstrap: scratch\n", group=1),
                       NewObject(0x4004, path=part, group=1, extra=struct.pack("<ii", 1, 2) + b"02\x00")])
    os.unlink(part)


def _as_client(c, *argv, timeout=60):
    """A Slurm command run by the user `nobody` through the client configuration that has
    sifguard's cli_filter (tests/slurm/cluster.sh writes it next to the plain one)."""
    return subprocess.run(["runuser", "-u", "nobody", "--", "env",
                           f"SLURM_CONF={c['env']['SIFGUARD_CLIENT_SLURM_CONF']}",
                           f"SIFGUARD_REAL_APPTAINER={c['env']['SIFGUARD_REAL_APPTAINER']}", *argv],
                          capture_output=True, text=True, env=c["env"], timeout=timeout)


def test_submission_feedback_through_cli_filter(cluster, results):
    """sbatch/srun refuse at submission, with the reason and the script line, what the
    prolog would refuse at start; a signed image is accepted and runs; a client without the
    filter (the bypass) gets the job accepted, and the prolog still cancels it."""
    J = cluster["jobs"]
    for name, body in (("pre-unsigned", f"echo start\napptainer exec {J}/unsigned.sif echo RAN-BAD"),
                       ("pre-tamperhead", f"IMG={J}/foreign.sif\napptainer run $IMG")):
        script = J / f"{name}.sh"
        script.write_text("#!/bin/bash\n" + body + "\n")
        os.chmod(script, 0o755)
        p = _as_client(cluster, "sbatch", "--parsable", "-D", str(J), "-o", str(J / f"{name}.out"), str(script))
        assert p.returncode != 0, (p.stdout, p.stderr)
        line = 3 if name == "pre-unsigned" else 3
        assert f"sbatch: error: sifguard: {name}.sh:{line}: " in p.stderr, p.stderr
        assert not p.stdout.strip()                                   # no job id: never submitted
    assert "not signed" in _as_client(cluster, "sbatch", "--wrap", f"apptainer exec {J}/unsigned.sif true",
                                      "-D", str(J), "-o", "/dev/null").stderr
    p = _as_client(cluster, "srun", "-D", str(J), "apptainer", "exec", f"{J}/unsigned.sif", "echo", "RAN-SRUN-BAD")
    assert p.returncode != 0 and "srun: error: sifguard: command:" in p.stderr and "RAN-SRUN-BAD" not in p.stdout
    # accepted and run
    script = J / "pre-signed.sh"
    script.write_text(f"#!/bin/bash\napptainer exec {J}/signed.sif echo RAN-PRE-OK\n")
    os.chmod(script, 0o755)
    p = _as_client(cluster, "sbatch", "--parsable", "-D", str(J), "-o", str(J / "pre-signed.out"), str(script))
    assert p.returncode == 0 and "error" not in p.stderr, p.stderr
    ok = p.stdout.strip()
    # the bypass: a client without the filter; the controller's prolog decides
    bad = submit(cluster, "pre-bypass", f"apptainer exec {J}/unsigned.sif echo RAN-BAD")
    wait(cluster, [ok, bad])
    assert state(cluster, ok) == "COMPLETED" and "RAN-PRE-OK" in output(cluster, "pre-signed")
    assert state(cluster, bad) == "CANCELLED" and "not signed" in output(cluster, "pre-bypass")


def test_doctor_finds_the_test_cluster_healthy(cluster):
    """`sifguard slurm doctor` on the running cluster: everything `slurm install` and cluster.sh
    set up passes (the policy's roots name no revocation endpoint: that check is skipped);
    with the issuing CA listed as an intermediate, its OCSP responder and CRL answer too."""
    D = cluster["env"]["SIFGUARD_CLUSTER_DIR"]
    r = run_cli("slurm", "doctor", "--prefix", f"{D}/hooks", "--json", env=cluster["env"])
    doc = json.loads(r.out)
    checks = {c["name"]: c for c in doc["checks"]}
    bad = {n: c for n, c in checks.items() if c["status"] not in ("ok", "skip")
           and not (n == "policy snapshot" and c["status"] == "warn")}   # stale until a root hook runs
    assert r.rc == 0 and not bad, bad
    # the controller's slurm.conf has no client filter (tests use a client configuration for it)
    assert {n for n, c in checks.items() if c["status"] == "skip"} <= {"revocation endpoints",
                                                                       "submit-time feedback"}, checks
    r = run_cli("slurm", "doctor", "--prefix", f"{D}/hooks", "--slurm-conf",
                cluster["env"]["SIFGUARD_CLIENT_SLURM_CONF"], "--json", env=cluster["env"])
    client = {c["name"]: c for c in json.loads(r.out)["checks"]}
    assert client["submit-time feedback"]["status"] == "ok", client["submit-time feedback"]
    for n in ("slurm.conf PrologSlurmctld", "slurm.conf TaskProlog", "plugstack.conf", "SPANK plugin",
              "hooks run as a job user", "image store", "stager", "audit log", "running slurmctld"):
        assert checks[n]["status"] == "ok", checks[n]
    w = cluster["w"]
    shutil.copyfile(w / "ca" / "intermediate.pem", w / "intermediate.pem")
    os.chmod(w / "intermediate.pem", 0o644)
    text = (w / "policy.yaml").read_text().replace(
        "trust: {roots: [", f"trust: {{intermediates: [{w}/intermediate.pem], roots: [")
    (w / "policy-doctor.yaml").write_text(text)
    os.chmod(w / "policy-doctor.yaml", 0o644)
    r = run_cli("slurm", "doctor", "--prefix", f"{D}/hooks", "--policy", w / "policy-doctor.yaml", "--json",
                env=cluster["env"])
    checks = {c["name"]: c for c in json.loads(r.out)["checks"]}
    net = {n: c for n, c in checks.items() if n.startswith(("OCSP ", "CRL "))}
    assert r.rc == 0 and net and all(c["status"] == "ok" for c in net.values()), net
    table = run_cli("slurm", "doctor", "--prefix", f"{D}/hooks", env=cluster["env"])
    assert table.rc == 0 and "✘" not in table.out, table.out
