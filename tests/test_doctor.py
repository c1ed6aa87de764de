"""`sifguard slurm doctor` against real installations made by `sifguard slurm install` in a
temporary directory (real hooks, a real SPANK plugin built with cc, a real CA with
`ca serve` as the responder, a real stager), each broken in one way at a time."""
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

import pki
from conftest import Server, free_port, run_cli

if os.geteuid() != 0:
    pytest.skip("the doctor's tests build root-owned installations (CI runs as root)", allow_module_level=True)

CLUSTER_PY = "/opt/sifguard-cluster-venv/bin/python"


def _user_python():
    """A Python job users can run with sifguard's dependencies (the cluster's venv), or None:
    this test run's own interpreter may live under a 0700 home."""
    if not os.path.exists(CLUSTER_PY):
        return None
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", CLUSTER_PY, "-c",
                        "import cryptography, yaml, requests"], capture_output=True, timeout=60)
    return CLUSTER_PY if p.returncode == 0 else None


USER_PY = _user_python()


def _public_dir():
    """A root-owned 0755 directory directly under /tmp: what job users must read lies there.
    (Not pytest's tmp: pytest sets /tmp/pytest-of-root back to 0700 at every session,
    also a concurrent one.)"""
    import pathlib
    import tempfile
    d = pathlib.Path(tempfile.mkdtemp(prefix="sifguard-doctor-", dir="/tmp"))
    os.chmod(d, 0o755)
    return d


@pytest.fixture
def tmp():
    d = _public_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def site():
    """A CA served on 127.0.0.1 and a stager serving a store; shared by every installation."""
    w = _public_dir()
    port = free_port()
    ca = w / "ca"
    assert run_cli("ca", "init", "--ca", ca, "--name", "Doctor Site", "--url", f"http://127.0.0.1:{port}").rc == 0
    srv = Server(ca, port=port)
    store, sock = w / "store", w / "stager.sock"
    store.mkdir(mode=0o755)
    log = open(w / "stager.log", "wb")
    stager = subprocess.Popen([sys.executable, "-m", "sifguard", "store", "serve", "--store", str(store),
                               "--socket", str(sock)], stdout=subprocess.DEVNULL, stderr=log)
    try:
        for _ in range(200):
            if sock.exists():
                break
            if stager.poll() is not None:
                raise RuntimeError(open(w / "stager.log").read())
            import time
            time.sleep(0.05)
        yield {"w": w, "ca": ca, "port": port, "srv": srv, "store": store, "sock": sock}
    finally:
        stager.terminate()
        try:
            stager.wait(10)
        except subprocess.TimeoutExpired:
            stager.kill()
            stager.wait()
        log.close()
        srv.stop()
        shutil.rmtree(w, ignore_errors=True)


class Install:
    def __init__(self, d, site, policy_extra="", roots=None, store=None, slurm_conf=None):
        self.d = d
        os.chmod(d, 0o755)
        self.root = str(d / "root.pem")
        shutil.copyfile(site["ca"] / "root.pem", self.root)
        self.inter = str(d / "intermediate.pem")
        shutil.copyfile(site["ca"] / "intermediate.pem", self.inter)
        os.chmod(self.root, 0o644)
        os.chmod(self.inter, 0o644)
        roots = roots or [self.root]
        self.policy = d / "policy.yaml"
        self.policy.write_text(f"""version: 1
trust: {{roots: {json.dumps([str(r) for r in roots])}, intermediates: [{self.inter}]}}
revocation:
  mode: enforce
  timeout: 3
  cache_dir: {d}/revcache
{policy_extra}cache: {{images: {d}/imgcache}}
audit: {{log: {d}/log/audit.jsonl}}
rules:
  - name: default
    require: signed
""")
        os.chmod(self.policy, 0o644)
        self.prefix = d / "hooks"
        self.slurm_conf = slurm_conf or d / "slurm.conf"
        self.store = store or site["store"]
        r = run_cli("slurm", "install", "--prefix", self.prefix, "--policy", self.policy, "--slurm-conf",
                    self.slurm_conf, "--apptainer", "/bin/true", "--singularity", "/bin/true",
                    "--python", USER_PY or sys.executable, "--store", self.store,
                    "--stager-socket", site["sock"])
        assert r.rc == 0, r
        self.lines = r.out.splitlines()
        self.plugstack = d / "plugstack.conf"
        if not os.path.exists(self.slurm_conf):
            with open(self.slurm_conf, "w") as f:
                f.write("ClusterName=t\n" + "\n".join(x for x in self.lines if x.startswith(("PrologSlurmctld=",
                                                                                                "TaskProlog=")))
                        + f"\nPlugStackConfig={self.plugstack}\n")
        self.plugstack.write_text("\n".join(x for x in self.lines if x.startswith("required ")) + "\n")

    def doctor(self, *extra, as_nobody=False):
        args = ["slurm", "doctor", "--prefix", self.prefix, "--json", *extra]
        if as_nobody:
            p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                                "-m", "sifguard", *map(str, args)], capture_output=True, text=True, timeout=120,
                               cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            assert "Traceback" not in p.stderr, p.stderr
            rc, out = p.returncode, p.stdout
        else:
            r = run_cli(*args)
            rc, out = r.rc, r.out
        doc = json.loads(out)
        return rc, {c["name"]: c for c in doc["checks"]}, doc


def failed(checks):
    return {n for n, c in checks.items() if c["status"] == "fail"}


def only_failure(checks, *names):
    """The named checks failed, each with a fix; with a Python users can run, nothing else did."""
    for n in names:
        assert checks[n]["status"] == "fail", checks[n]
        assert checks[n]["fix"], checks[n]
    if USER_PY:
        assert failed(checks) == set(names), {n: checks[n] for n in failed(checks)}


@pytest.fixture
def inst(tmp, site):
    return Install(tmp, site)


# --- the whole picture ----------------------------------------------------------------------
def test_good_installation_all_pass(inst):
    if not USER_PY:
        pytest.skip("no Python every user can run with sifguard's dependencies (run tests/slurm/cluster.sh once)")
    rc, checks, doc = inst.doctor()
    assert rc == 0, {n: c for n, c in checks.items() if c["status"] != "ok"}
    assert doc["ok"] is True
    # no slurmctld runs for these installations: the one check that asks it is skipped; the
    # submit-time filter is optional and not enabled here
    assert checks["running slurmctld"]["status"] == "skip"
    assert checks["submit-time feedback"]["status"] == "skip"
    assert all(c["status"] == "ok" for n, c in checks.items()
               if n not in ("running slurmctld", "submit-time feedback")), checks
    for name in ("slurm.conf PrologSlurmctld", "slurm.conf TaskProlog", "plugstack.conf", "SPANK plugin",
                 "hook shim/apptainer", "hooks run as a job user", "policy readable by users", "image store",
                 "stager", "audit log", "image cache"):
        assert name in checks
    ocsp = [c for n, c in checks.items() if n.startswith("OCSP ")]
    crl = [c for n, c in checks.items() if n.startswith("CRL ")]
    assert ocsp and crl and all(" ms)" in c["detail"] for c in ocsp + crl)
    table = run_cli("slurm", "doctor", "--prefix", inst.prefix)
    assert table.rc == 0 and "✔" in table.out and "✘" not in table.out


def test_table_shows_fix_under_each_failure(inst):
    inst.plugstack.write_text("# nothing\n")
    r = run_cli("slurm", "doctor", "--prefix", inst.prefix)
    assert r.rc == 1
    lines = r.out.splitlines()
    i = next(k for k, x in enumerate(lines) if x.startswith("✘ plugstack.conf"))
    assert "fix:" in lines[i + 1] and "sifguard_spank.so" in lines[i + 1]


# --- Slurm's configuration ------------------------------------------------------------------
def test_missing_plugstack_line(inst):
    inst.plugstack.write_text("required /usr/lib/other_spank.so x=1\n")
    rc, checks, _ = inst.doctor()
    assert rc == 1
    only_failure(checks, "plugstack.conf")
    assert f"required {inst.prefix}/sifguard_spank.so" in checks["plugstack.conf"]["fix"]


def test_optional_plugin_fails_open(inst):
    line = inst.plugstack.read_text().replace("required ", "optional ")
    inst.plugstack.write_text(line)
    rc, checks, _ = inst.doctor()
    assert rc == 1 and "optional" in checks["plugstack.conf"]["detail"]


def test_plugstack_wrong_helper(inst):
    inst.plugstack.write_text(inst.plugstack.read_text().replace("helper=", "helper=/tmp/x"))
    rc, checks, _ = inst.doctor()
    only_failure(checks, "plugstack.conf")
    assert "helper=" in checks["plugstack.conf"]["detail"]


def test_plugstack_through_include_and_default_path(tmp, site):
    """No PlugStackConfig: plugstack.conf next to slurm.conf, which includes plugstack.conf.d/*.conf."""
    inst = Install(tmp, site)
    inst.slurm_conf.write_text("\n".join(x for x in inst.slurm_conf.read_text().splitlines()
                                         if not x.startswith("PlugStackConfig")) + "\n")
    (tmp / "plugstack.conf.d").mkdir()
    (tmp / "plugstack.conf.d" / "sifguard.conf").write_text(inst.plugstack.read_text())
    inst.plugstack.write_text("include plugstack.conf.d/*.conf\n")
    rc, checks, _ = inst.doctor()
    assert checks["plugstack.conf"]["status"] == "ok", checks["plugstack.conf"]
    assert "sifguard.conf:1" in checks["plugstack.conf"]["detail"]


def test_slurm_conf_include_chain(tmp, site):
    """Include directives (relative, glob, nested), case-insensitive keys, comma lists."""
    inst = Install(tmp, site)
    conf = tmp / "slurm.conf"
    (tmp / "slurm.conf.d").mkdir()
    pro = f"{inst.prefix}/sifguard-prolog-slurmctld"
    (tmp / "slurm.conf.d" / "10-hooks.conf").write_text(
        f"prologslurmctld=/usr/local/sbin/site-prolog,{pro}  # two controller prologs\nInclude ../tasks.conf\n")
    (tmp / "tasks.conf").write_text(f"TASKPROLOG={inst.prefix}/sifguard-task-prolog\n")
    conf.write_text(f"ClusterName=t\ninclude slurm.conf.d/*.conf\nPlugStackConfig={inst.plugstack}\n")
    rc, checks, _ = inst.doctor()
    assert checks["slurm.conf PrologSlurmctld"]["status"] == "ok", checks["slurm.conf PrologSlurmctld"]
    assert checks["slurm.conf TaskProlog"]["status"] == "ok"
    assert "tasks.conf:1" in checks["slurm.conf TaskProlog"]["detail"]
    # a later setting overrides: the last TaskProlog wins, as in Slurm
    with open(conf, "a") as f:
        f.write("TaskProlog=/usr/local/sbin/other-task-prolog\n")
    rc, checks, _ = inst.doctor()
    assert rc == 1
    only_failure(checks, "slurm.conf TaskProlog")
    assert "TaskProlog" in checks["slurm.conf TaskProlog"]["fix"] and "scontrol reconfigure" in \
        checks["slurm.conf TaskProlog"]["fix"]


def test_missing_slurm_lines(inst):
    inst.slurm_conf.write_text(f"ClusterName=t\nPlugStackConfig={inst.plugstack}\n")
    rc, checks, _ = inst.doctor()
    only_failure(checks, "slurm.conf PrologSlurmctld", "slurm.conf TaskProlog")
    assert f"PrologSlurmctld={inst.prefix}/sifguard-prolog-slurmctld" in checks["slurm.conf PrologSlurmctld"]["fix"]


def test_unreadable_slurm_conf_is_a_failure_not_a_traceback(inst):
    rc, checks, _ = inst.doctor("--slurm-conf", str(inst.d / "nope.conf"))
    assert rc == 1 and checks["slurm.conf"]["status"] == "fail"


# --- the SPANK plugin -----------------------------------------------------------------------
def test_spank_plugin_missing_or_garbage(inst):
    so = inst.prefix / "sifguard_spank.so"
    so.write_bytes(b"\x7fELF not really")
    rc, checks, _ = inst.doctor()
    assert checks["SPANK plugin"]["status"] == "fail" and "cannot be loaded" in checks["SPANK plugin"]["detail"]
    os.unlink(so)
    rc, checks, _ = inst.doctor()
    assert checks["SPANK plugin"]["status"] == "fail" and "does not exist" in checks["SPANK plugin"]["detail"]


def test_spank_plugin_needing_a_missing_library(inst, tmp):
    """A plugin linked against a library that is gone (as libslurm after an upgrade): a clear ✘."""
    lib = tmp / "libgone.so"
    src = tmp / "gone.c"
    src.write_text("int gone(void) { return 1; }\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", lib, src], check=True, timeout=60)
    plugin = tmp / "p.c"
    plugin.write_text("int gone(void);\nint slurm_spank_init(void) { return gone(); }\n"
                      "int slurm_spank_task_init_privileged(void) { return 0; }\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", inst.prefix / "sifguard_spank.so", plugin,
                    f"-L{tmp}", "-lgone"], check=True, timeout=60)
    os.unlink(lib)
    rc, checks, _ = inst.doctor()
    c = checks["SPANK plugin"]
    assert c["status"] == "fail" and "libgone.so" in c["detail"] and "libslurm" in c["fix"]


# --- file ownership and modes ---------------------------------------------------------------
def test_group_writable_hook(inst):
    shim = inst.prefix / "shim" / "apptainer"
    os.chmod(shim, 0o775)
    rc, checks, _ = inst.doctor()
    assert rc == 1
    only_failure(checks, "hook shim/apptainer")
    assert f"chmod go-w {shim}" in checks["hook shim/apptainer"]["fix"]


def test_group_writable_hook_directory(inst):
    os.chmod(inst.prefix, 0o775)
    try:
        rc, checks, _ = inst.doctor()
        assert rc == 1
        for n in ("hook sifguard-prolog-slurmctld", "hook sifguard-task-prolog", "hook sifguard_spank.so",
                  "hooks configuration"):
            assert checks[n]["status"] == "fail" and f"chmod go-w {inst.prefix}" in checks[n]["fix"], checks[n]
    finally:
        os.chmod(inst.prefix, 0o755)


def test_hook_owned_by_a_user(inst):
    os.chown(inst.prefix / "sifguard-task-prolog", 65534, 65534)
    rc, checks, _ = inst.doctor()
    only_failure(checks, "hook sifguard-task-prolog")
    assert "chown root:root" in checks["hook sifguard-task-prolog"]["fix"]


def test_symlinked_hook(inst, tmp):
    real = tmp / "elsewhere-spank-check"
    shutil.copyfile(inst.prefix / "sifguard-spank-check", real)
    os.chmod(real, 0o755)                       # root's alone, yet not what install wrote
    os.unlink(inst.prefix / "sifguard-spank-check")
    os.symlink(real, inst.prefix / "sifguard-spank-check")
    rc, checks, _ = inst.doctor()
    assert rc == 1
    only_failure(checks, "hook sifguard-spank-check")
    assert "symlink" in checks["hook sifguard-spank-check"]["detail"]


def test_interpreter_writable_by_users(inst, tmp):
    """A hook whose interpreter (resolved through `env` and PATH) someone else could replace."""
    bindir = tmp / "ubin"
    bindir.mkdir(mode=0o777)
    os.chmod(bindir, 0o777)
    os.symlink("/bin/sh", bindir / "python3")
    hook = inst.prefix / "sifguard-spank-check"
    text = hook.read_text().split("\n", 1)[1]
    hook.write_text("#!/usr/bin/env python3\n" + text)
    env = {"PATH": f"{bindir}:{os.environ['PATH']}"}
    r = run_cli("slurm", "doctor", "--prefix", inst.prefix, "--json", env=env)
    checks = {c["name"]: c for c in json.loads(r.out)["checks"]}
    c = checks[f"interpreter {bindir}/python3"]
    assert r.rc == 1 and c["status"] == "fail" and f"chmod go-w {bindir}" in c["fix"]


# --- policy and trust -----------------------------------------------------------------------
def test_unreadable_root(inst):
    os.chmod(inst.root, 0o600)
    rc, checks, _ = inst.doctor()
    name = f"trust root {inst.root}"
    assert rc == 1
    only_failure(checks, name)
    assert "nobody cannot read" in checks[name]["detail"] and f"chmod a+r {inst.root}" in checks[name]["fix"]


def test_root_in_a_directory_users_cannot_enter(tmp, site):
    inst = Install(tmp, site)
    private = tmp / "private"
    private.mkdir(mode=0o700)
    root = private / "root.pem"
    shutil.copyfile(inst.root, root)
    os.chmod(root, 0o644)
    inst.policy.write_text(inst.policy.read_text().replace(f"roots: [\"{inst.root}\"]", f"roots: [\"{root}\"]"))
    rc, checks, _ = inst.doctor()
    assert checks[f"trust root {root}"]["status"] == "fail"


def test_unreadable_policy(inst):
    os.chmod(inst.policy, 0o600)
    rc, checks, _ = inst.doctor()
    assert rc == 1 and checks["policy readable by users"]["status"] == "fail"


def test_policy_that_does_not_load(inst):
    inst.policy.write_text("version: 1\ntrust: {roots: []}\n")
    rc, checks, _ = inst.doctor()
    assert rc == 1 and checks["policy"]["status"] == "fail" and "policy check" in checks["policy"]["fix"]


def _self_signed(tmp, name, days, start):
    key = pki.new_key()
    c = pki.cert(key, name, ca=True, days=days, start=start)
    return pki.write(tmp / f"{name}.pem", pki.pem(c))


def test_expired_root(tmp, site):
    old = _self_signed(tmp, "Old Root", 30, dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=60))
    inst = Install(tmp, site, roots=[str(tmp / "root.pem"), old])
    rc, checks, _ = inst.doctor()
    assert rc == 1
    only_failure(checks, f"trust root {old}")
    assert "EXPIRED" in checks[f"trust root {old}"]["detail"]


def test_root_expiring_soon_warns(tmp, site):
    soon = _self_signed(tmp, "Soon Root", 40, dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30))
    inst = Install(tmp, site, roots=[str(tmp / "root.pem"), soon])
    rc, checks, _ = inst.doctor()
    c = checks[f"trust root {soon}"]
    assert c["status"] == "warn" and "expires in" in c["detail"]
    if USER_PY:
        assert rc == 0


# --- revocation endpoints -------------------------------------------------------------------
def test_responder_down(tmp, site):
    dead = free_port()
    inst = Install(tmp, site, policy_extra=f"  responders:\n    - issuer: \"CN=Doctor Site Root CA*\"\n"
                                                f"      url: http://127.0.0.1:{dead}/\n")
    rc, checks, _ = inst.doctor()
    name = f"OCSP http://127.0.0.1:{dead}/"
    assert rc == 1
    only_failure(checks, name)
    assert "Connection refused" in checks[name]["detail"] and f"127.0.0.1:{dead}" in checks[name]["fix"]
    assert checks[f"CRL http://127.0.0.1:{site['port']}/root-crl.der"]["status"] == "ok"


def test_responder_that_never_answers_is_bounded(tmp, site):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)                                   # accepts connections, never answers
    try:
        url = f"http://127.0.0.1:{s.getsockname()[1]}/"
        inst = Install(tmp, site, policy_extra=f"  responders:\n    - issuer: \"CN=Doctor Site Root CA*\"\n"
                                                    f"      url: {url}\n")
        rc, checks, _ = inst.doctor("--timeout", "1")
        assert rc == 1 and checks[f"OCSP {url}"]["status"] == "fail"
    finally:
        s.close()


def test_responder_override_for_the_issuing_ca(tmp, site):
    """An override for the intermediate's own certificates: asked about a serial it never used."""
    url = f"http://127.0.0.1:{site['port']}/"
    inst = Install(tmp, site, policy_extra=f"  responders:\n    - issuer: \"CN=Doctor Site Issuing CA*\"\n"
                                                f"      url: {url}extra\n")
    rc, checks, _ = inst.doctor()
    c = checks[f"OCSP {url}extra"]
    assert c["status"] == "ok", c


def test_revoked_intermediate(tmp, site):
    """The responder answers, and says the issuing CA is revoked: that is a ✘ too."""
    port = free_port()
    ca = tmp / "ca2"
    assert run_cli("ca", "init", "--ca", ca, "--name", "Revoked Site", "--url", f"http://127.0.0.1:{port}").rc == 0
    r = run_cli("ca", "revoke", "--ca", ca, "--cert", ca / "intermediate.pem", "--reason", "keyCompromise")
    if r.rc != 0:
        pytest.skip(f"`ca revoke` does not revoke the intermediate: {r.err.strip()[:200]}")
    srv = Server(ca, port=port)
    try:
        inst = Install(tmp, {**site, "ca": ca})
        rc, checks, _ = inst.doctor()
        c = checks[f"OCSP http://127.0.0.1:{port}/"]
        assert rc == 1 and c["status"] == "fail" and "REVOKED" in c["detail"]
    finally:
        srv.stop()


# --- store, stager, logs, caches ------------------------------------------------------------
def test_unsafe_store_dir(tmp, site):
    store = tmp / "store"
    store.mkdir()
    os.chmod(store, 0o775)
    inst = Install(tmp, site, store=store)
    rc, checks, _ = inst.doctor()
    assert rc == 1
    assert checks["image store"]["status"] == "fail"
    assert f"chmod go-w {store}" in checks["image store"]["fix"]


def test_store_under_a_user_writable_directory(tmp, site):
    up = tmp / "shared"
    up.mkdir()
    os.chmod(up, 0o777)
    (up / "store").mkdir(mode=0o755)
    inst = Install(tmp, site, store=up / "store")
    rc, checks, _ = inst.doctor()
    assert checks["image store"]["status"] == "fail" and str(up) in checks["image store"]["fix"]


def test_stager_down(tmp, site):
    inst = Install(tmp, site)
    cfgp = inst.prefix / "sifguard-slurm.json"
    cfg = json.loads(cfgp.read_text())
    cfg["stager_socket"] = str(tmp / "no.sock")
    cfgp.write_text(json.dumps(cfg))
    rc, checks, _ = inst.doctor()
    assert rc == 1
    only_failure(checks, "stager")
    assert "store serve" in checks["stager"]["fix"]


def test_stager_socket_answered_by_a_user_process(tmp, site):
    inst = Install(tmp, site)
    sock = tmp / "user.sock"
    code = ("import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(4); "
            "print('up', flush=True); time.sleep(60)")
    p = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code,
                          str(sock)], stdout=subprocess.PIPE, text=True)
    try:
        os.chmod(tmp, 0o777)
        assert p.stdout.readline().strip() == "up"
        os.chmod(tmp, 0o755)
        cfgp = inst.prefix / "sifguard-slurm.json"
        cfg = json.loads(cfgp.read_text())
        cfg["stager_socket"] = str(sock)
        cfgp.write_text(json.dumps(cfg))
        rc, checks, _ = inst.doctor()
        assert checks["stager"]["status"] == "fail" and "not root" in checks["stager"]["detail"]
    finally:
        p.kill()
        p.wait()


def test_audit_log_directory_users_can_write(inst):
    logdir = inst.d / "log"
    logdir.mkdir()
    os.chmod(logdir, 0o777)
    rc, checks, _ = inst.doctor()
    assert rc == 1
    only_failure(checks, "audit log")
    assert f"chmod go-w {logdir}" in checks["audit log"]["fix"]


def test_image_cache_owned_by_a_user(inst):
    cache = inst.d / "imgcache"
    cache.mkdir()
    os.chown(cache, 65534, 65534)
    rc, checks, _ = inst.doctor()
    only_failure(checks, "image cache")


# --- usage, defaults, unprivileged runs -------------------------------------------------------
@pytest.mark.parametrize("bad", [["--timeout", "0"], ["--timeout", "x"], ["--timeout", "-1"], ["--bogus"]])
def test_bad_usage_exits_2(inst, bad):
    r = run_cli("slurm", "doctor", "--prefix", inst.prefix, *bad)
    assert r.rc == 2 and len(r.err.strip().splitlines()) == 1 and not r.out


def test_no_installation_here(tmp):
    r = run_cli("slurm", "doctor", "--prefix", tmp / "nothing", "--json")
    doc = json.loads(r.out)
    checks = {c["name"]: c for c in doc["checks"]}
    assert r.rc == 1 and checks["hooks configuration"]["status"] == "fail"
    assert "sifguard slurm install" in checks["hooks configuration"]["fix"]


def test_as_an_unprivileged_user(inst):
    """As nobody: what needs root is skipped, the rest still checked, never a traceback."""
    rc, checks, doc = inst.doctor(as_nobody=True)
    assert doc["setup"]["as_root"] is False
    assert checks["audit log"]["status"] == "skip"
    assert checks["hook shim/apptainer"]["status"] == "ok"
    os.chmod(inst.prefix / "shim" / "apptainer", 0o777)
    rc, checks, _ = inst.doctor(as_nobody=True)
    assert rc == 1 and checks["hook shim/apptainer"]["status"] == "fail"


def test_policy_writable_by_group(inst):
    os.chmod(inst.policy, 0o664)
    rc, checks, _ = inst.doctor()
    assert rc == 1
    only_failure(checks, "policy")
    assert f"chmod go-w {inst.policy}" in checks["policy"]["fix"]


def test_real_runtime_writable_by_users(tmp, site):
    inst = Install(tmp, site)
    rt = tmp / "apptainer"
    shutil.copyfile("/bin/true", rt)
    os.chmod(rt, 0o777)
    cfgp = inst.prefix / "sifguard-slurm.json"
    cfg = json.loads(cfgp.read_text())
    cfg["apptainer"] = cfg["singularity"] = str(rt)
    cfgp.write_text(json.dumps(cfg))
    rc, checks, _ = inst.doctor()
    only_failure(checks, f"runtime {rt}")


def test_include_loop_is_bounded(inst):
    inst.slurm_conf.write_text(inst.slurm_conf.read_text() + f"Include {inst.slurm_conf}\n")
    rc, checks, _ = inst.doctor()
    assert rc == 1 and "too many" in checks["slurm.conf"]["detail"]


def test_slurm_conf_parsing(tmp):
    from sifguard.slurm import slurm_conf as SC
    (tmp / "a.conf").write_text('# TaskProlog=/commented\nNodeName=n1 CPUs=4 Feature="x y"\n'
                                     "taskprolog=/one # trailing comment\nInclude b*.conf\n")
    (tmp / "b1.conf").write_text("TaskProlog=/two\n")
    (tmp / "b2.conf").write_text("TASKPROLOG=/three\nPrologSlurmctld=/p1,/p2\n")
    settings, files = SC.read_slurm_conf(str(tmp / "a.conf"))
    assert [s.value for s in settings["taskprolog"]] == ["/one", "/two", "/three"]
    assert SC.last(settings, "TaskProlog").file.endswith("b2.conf")
    assert settings["feature"][0].value == "x y" and settings["cpus"][0].value == "4"
    assert len(files) == 3
    (tmp / "p.conf").write_text("optional /x.so a=1\ninclude sub/*.conf\n")
    (tmp / "sub").mkdir()
    (tmp / "sub" / "s.conf").write_text("required /y.so b=2 c=3\n")
    plugins, _ = SC.read_plugstack(str(tmp / "p.conf"))
    assert [(p.kind, p.path, p.args) for p in plugins] == [("optional", "/x.so", ("a=1",)),
                                                           ("required", "/y.so", ("b=2", "c=3"))]


def test_plugin_writable_by_others_is_not_loaded(inst):
    """Loading a plugin runs its constructors: the doctor (root) never loads one a user could
    have written — here one that would leave a mark if it were loaded."""
    src = inst.d / "evil.c"
    mark = inst.d / "loaded"
    src.write_text('#include <stdio.h>\n__attribute__((constructor)) static void c(void) '
                   f'{{ FILE *f = fopen("{mark}", "w"); if (f) fclose(f); }}\n'
                   "int slurm_spank_init(void) { return 0; }\n"
                   "int slurm_spank_task_init_privileged(void) { return 0; }\n")
    so = inst.prefix / "sifguard_spank.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", so, src], check=True, timeout=60)
    os.chmod(so, 0o777)
    rc, checks, _ = inst.doctor()
    assert checks["SPANK plugin"]["status"] == "fail" and "not loaded" in checks["SPANK plugin"]["detail"]
    assert not mark.exists()


def test_revocation_off_skips_the_endpoints(tmp, site):
    dead = free_port()
    inst = Install(tmp, site, policy_extra=f"  responders:\n    - issuer: \"CN=Doctor Site Root CA*\"\n"
                                           f"      url: http://127.0.0.1:{dead}/\n")
    inst.policy.write_text(inst.policy.read_text().replace("mode: enforce", "mode: off"))
    rc, checks, _ = inst.doctor()
    assert checks["revocation endpoints"]["status"] == "skip"
    assert not [n for n in checks if n.startswith(("OCSP ", "CRL "))]


def test_site_task_prolog_wrapping_sifguards(inst):
    """A site task prolog that calls sifguard's: a warning (the doctor cannot prove it runs it),
    not a failure; one that does not mention it: a failure whose fix says how to combine them."""
    site_tp = inst.d / "site-task-prolog"
    site_tp.write_text(f"#!/bin/sh\necho export FOO=1\nexec {inst.prefix}/sifguard-task-prolog\n")
    os.chmod(site_tp, 0o755)
    text = inst.slurm_conf.read_text()
    inst.slurm_conf.write_text(text + f"TaskProlog={site_tp}\n")
    rc, checks, _ = inst.doctor()
    assert checks["slurm.conf TaskProlog"]["status"] == "warn"
    site_tp.write_text("#!/bin/sh\necho export FOO=1\n")
    rc, checks, _ = inst.doctor()
    c = checks["slurm.conf TaskProlog"]
    assert rc == 1 and c["status"] == "fail" and f"also run {inst.prefix}/sifguard-task-prolog" in c["fix"]


def test_submit_time_filter(inst):
    """Optional: skipped until enabled; then the cli_filter.lua next to slurm.conf must exist,
    be root's alone (it runs in every user's sbatch) and call the installed precheck."""
    rc, checks, _ = inst.doctor()
    assert checks["submit-time feedback"]["status"] == "skip" and "CliFilterPlugins" in checks["submit-time feedback"]["detail"]
    with open(inst.slurm_conf, "a") as f:
        f.write("CliFilterPlugins=cli_filter/lua\n")
    lua = os.path.join(os.path.dirname(str(inst.slurm_conf)), "cli_filter.lua")
    rc, checks, _ = inst.doctor()
    assert rc == 1
    only_failure(checks, "submit-time feedback")
    assert "install -m 0644" in checks["submit-time feedback"]["fix"]
    shutil.copyfile(os.path.join(str(inst.prefix), "cli_filter.lua"), lua)
    os.chmod(lua, 0o644)
    rc, checks, _ = inst.doctor()
    assert checks["submit-time feedback"]["status"] == "ok", checks["submit-time feedback"]
    os.chmod(lua, 0o666)                      # anyone could make every sbatch run their code
    rc, checks, _ = inst.doctor()
    only_failure(checks, "submit-time feedback")
    os.chmod(lua, 0o644)
    with open(lua, "w") as f:                  # a site's own filter that does not call ours
        f.write("function slurm_cli_pre_submit(o, i) return slurm.SUCCESS end\n")
    rc, checks, _ = inst.doctor()
    only_failure(checks, "submit-time feedback")
    assert "does not call" in checks["submit-time feedback"]["detail"]
