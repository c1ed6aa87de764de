"""The one gate and its pure decision core (issue 8: classes 2, 3, 4, 8 and the right depth).

The core is fed directly (real certificates, no servers, no sleeps); the gate and the
hooks run against real SIF bytes and real files. The runtime the shim execs is a
stand-in that records what it was given (Apptainer itself is not installable here)."""
import hashlib
import os
import shutil
import subprocess
import threading
import time

import pytest

from conftest import APPT, run_cli
from pki import SiteChain
from sifguard.enforce import core
from sifguard.enforce.decide import _signer
from sifguard.ocsp.client import Status
from sifguard.policy import model as m
from sifguard.policy.decide import UNKNOWN, JobContext, candidate_rules
from sifguard.x509.chain import build_path

ONE_GROUP = os.path.join(APPT, "images", "one-group.sif")


# --- the pure core ------------------------------------------------------------------
@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    d = tmp_path_factory.mktemp("core")
    a = SiteChain(d, cn="alice", email="alice@hpc.example.org")
    b = SiteChain(d, cn="bob", email="bob@elsewhere.org")
    sa = _signer(1, build_path(a.leaf, [a.inter], [a.root]))
    sb = _signer(1, build_path(b.leaf, [b.inter], [b.root]))
    return {"alice": sa, "bob": sb}


def _findings(*signers):
    return core.Findings(True, groups=((1, tuple(signers), ()),))


def _answers(table):
    """A revocation lookup from a dict {(serial): status} — no network, no clock."""
    def get(cert, issuer, links_left=1):
        st = table.get(cert.serial_number, "good")
        return Status(st, "test", f"test says {st}", cert.subject.rfc4514_string(), f"{cert.serial_number:X}")
    return get


RULE = m.Rule("r")
AUDIT = m.Rule("trial", action="audit")
BUILDERS = m.Rule("builders", signers=(m.SignerPattern(email="*@hpc.example.org"),))


@pytest.mark.parametrize("status,mode,allowed,word", [
    ("good", "enforce", True, "signed by"),
    ("revoked", "enforce", False, "revoked"),
    ("revoked", "soft-fail", False, "revoked"),        # soft-fail forgives outages only
    ("unknown", "soft-fail", False, "unknown"),
    ("unknown", "enforce", False, "unknown"),
    ("error", "enforce", False, "could not be established"),
    ("error", "soft-fail", True, "soft-fail"),
    ("revoked", "off", True, "not checked"),
])
def test_core_revocation_matrix(chains, status, mode, allowed, word):
    leaf = chains["alice"].path[0]
    v = core.decide((RULE,), "/x.sif", _findings(chains["alice"]), _answers({leaf.serial_number: status}), mode)
    assert v.allowed == allowed and word in v.reason, v.reason
    with pytest.raises(Exception):
        v.allowed = not allowed          # a frozen result


def test_core_intermediate_revoked_refuses(chains):
    inter = chains["alice"].path[1]
    v = core.decide((RULE,), "/x.sif", _findings(chains["alice"]), _answers({inter.serial_number: "revoked"}),
                    "enforce")
    assert not v.allowed and "Site Issuing CA" in v.reason


def test_core_second_signer_good_when_first_revoked(chains):
    first = chains["alice"].path[0]
    v = core.decide((RULE,), "/x.sif", _findings(chains["alice"], chains["bob"]),
                    _answers({first.serial_number: "revoked"}), "enforce")
    assert v.allowed and "bob" in v.reason


def test_core_signer_rules_and_audit(chains):
    v = core.decide((BUILDERS,), "/x.sif", _findings(chains["bob"]), _answers({}), "off")
    assert not v.allowed and "does not allow" in v.reason
    v = core.decide((AUDIT,), "/x.sif", core.Findings(False, "group 1 is not signed"), _answers({}), "off")
    assert v.allowed and v.decision == "audit" and "would refuse" in v.reason


@pytest.mark.parametrize("rules,allowed,decision", [
    ((AUDIT, RULE), False, "refuse"),          # an audit rule the context might select does not excuse
    ((AUDIT, m.Rule("any", require="any")), True, "audit"),
    ((m.Rule("any", require="any"), RULE), False, "refuse"),
])
def test_core_candidates_all_must_allow(rules, allowed, decision):
    v = core.decide(rules, "/x.sif", core.Findings(False, "group 1 is not signed"), _answers({}), "off")
    assert v.allowed == allowed and v.decision == decision
    if not allowed:
        assert "job context not established" in v.reason


def _policy(*rules):
    return m.Policy(path="p", version=1, roots=(), rules=tuple(rules))


def test_unknown_context_selects_every_rule_it_could():
    lenient = m.Rule("debug-audit", match=m.Match(partition=("debug",)), action="audit")
    acct = m.Rule("chem", match=m.Match(account=("chem",)), require="any")
    strict = m.Rule("default")
    pol = _policy(lenient, acct, strict)
    known = JobContext(user="u", partition="debug", account="phys")
    assert [r.name for r in candidate_rules(pol, "/a.sif", known)] == ["debug-audit"]
    unknown = JobContext(user="u", partition=UNKNOWN, account=UNKNOWN)
    assert [r.name for r in candidate_rules(pol, "/a.sif", unknown)] == ["debug-audit", "chem", "default"]
    half = JobContext(user="u", partition="batch", account=UNKNOWN)
    assert [r.name for r in candidate_rules(pol, "/a.sif", half)] == ["chem", "default"]
    # a path that does not match is never a candidate, whatever the context
    pathed = m.Rule("apps", match=m.Match(path=("/apps/**",), partition=("debug",)), require="any")
    assert [r.name for r in candidate_rules(_policy(pathed, strict), "/home/x.sif", unknown)] == ["default"]


# --- the shim through the gate --------------------------------------------------------
@pytest.fixture
def site(tmp_path):
    chain = SiteChain(tmp_path)
    os.chmod(tmp_path, 0o755)
    signed = tmp_path / "signed.sif"
    shutil.copyfile(ONE_GROUP, signed)
    assert run_cli("sign", signed, "--key", chain.key_pem, "--cert", chain.bundle_pem).rc == 0
    log = tmp_path / "ran.log"
    standin = tmp_path / "apptainer-real"
    # stand-in runtime: records the digest of the bytes behind its image operand
    standin.write_text(f'#!/bin/sh\nimg=$2\nshift 2\necho "$(sha256sum < "$img" | cut -c1-64)" >> {log}\nexit 0\n')
    os.chmod(standin, 0o755)
    return {"chain": chain, "signed": signed, "log": log, "standin": standin, "tmp": tmp_path}


def install(site, policy_text, *extra):
    pol = site["tmp"] / "policy.yaml"
    pol.write_text(policy_text)
    r = run_cli("slurm", "install", "--prefix", site["tmp"] / "hooks", "--policy", pol, "--apptainer", site["standin"],
                "--singularity", site["standin"], "--no-spank", "--slurm-conf", site["tmp"] / "slurm.conf", *extra)
    assert r.rc == 0, r
    return str(site["tmp"] / "hooks" / "shim" / "apptainer")


def base_policy(site, rules=""):
    return (f"version: 1\ntrust: {{roots: [{site['chain'].root_pem}]}}\nrevocation: {{mode: off}}\n"
            f"cache: {{images: off}}\naudit: {{log: {site['tmp']}/audit.jsonl}}\n{rules}")


def sha(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def test_symlink_swapped_while_checking_never_pairs_bytes_with_another_rule(site):
    """Class 2: the rule comes from the path of what was opened. A link flipped between an
    unsigned image under a permissive admin path and an unsigned image elsewhere, while the
    shim runs: whatever runs is the admin image's bytes, never the other's."""
    adm = site["tmp"] / "admin"
    adm.mkdir()
    trusted = adm / "unsigned-but-allowed.sif"
    shutil.copyfile(ONE_GROUP, trusted)
    evil = site["tmp"] / "evil.sif"
    with open(ONE_GROUP, "rb") as f:
        data = bytearray(f.read())
    data[-1] ^= 1
    evil.write_bytes(bytes(data))
    shim = install(site, base_policy(site, f"rules:\n  - name: admin\n    match: {{path: '{adm}/*'}}\n"
                                         "    require: any\n"))
    link = site["tmp"] / "link.sif"
    stop = threading.Event()

    def flip():
        tmp = site["tmp"] / "link.tmp"
        while not stop.is_set():
            for target in (trusted, evil):
                try:
                    os.symlink(target, tmp)
                    os.replace(tmp, link)
                except OSError:
                    pass
                time.sleep(0.0005)      # about as long in each state
    os.symlink(trusted, link)
    t = threading.Thread(target=flip)
    t.start()
    try:
        results = [subprocess.run([shim, "exec", str(link), "true"], capture_output=True, text=True, timeout=60)
                   for _ in range(40)]
    finally:
        stop.set()
        t.join()
    ran = site["log"].read_text().split() if site["log"].exists() else []
    assert ran and set(ran) == {sha(trusted)}, ("evil bytes ran under the admin rule", [r.stderr for r in results][:3])
    refused = [r for r in results if r.returncode != 0]
    assert all("not signed" in r.stderr for r in refused)


def test_environment_cannot_choose_a_lenient_rule(site):
    """Class 3: SLURM_JOB_PARTITION/ACCOUNT in the task environment are not believed. Outside
    a Slurm job the partition is UNKNOWN, so the audit rule for 'debug' cannot excuse."""
    unsigned = site["tmp"] / "unsigned.sif"
    shutil.copyfile(ONE_GROUP, unsigned)
    shim = install(site, base_policy(site, "rules:\n  - name: debug-audit\n    match: {partition: debug}\n"
                                         "    action: audit\n  - name: acct\n    match: {account: chem}\n"
                                         "    require: any\n"))
    for env in ({"SLURM_JOB_PARTITION": "debug", "SLURM_JOB_ID": "1"}, {"SLURM_JOB_ACCOUNT": "chem"}, {}):
        p = subprocess.run([shim, "exec", str(unsigned), "true"], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, **env))
        assert p.returncode == 1 and "job context not established" in p.stderr, (env, p.stderr)
    p = subprocess.run([shim, "exec", str(site["signed"]), "true"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_image_over_the_seal_limit_is_refused_not_copied(site):
    """Class 4: no unsealed copy ever; an image that cannot be sealed does not run (padding
    an image past the limit only gets it refused)."""
    shim = install(site, base_policy(site), "--seal-limit", "16K")
    before = set(os.listdir("/var/tmp"))
    p = subprocess.run([shim, "exec", str(site["signed"]), "true"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "limit for a sealed in-memory copy" in p.stderr and p.stderr.count("\n") == 1
    assert not site["log"].exists()
    assert set(os.listdir("/var/tmp")) <= before     # nothing written beside
    shim = install(site, base_policy(site), "--seal-limit", "64M")
    assert subprocess.run([shim, "exec", str(site["signed"]), "true"], timeout=60).returncode == 0
    assert site["log"].read_text().split() == [sha(site["signed"])]


@pytest.mark.parametrize("kind", ["fifo", "dir", "device", "socket"])
def test_non_regular_images_refused_without_blocking(site, kind):
    """Class 8 (the shim's side): opened non-blocking, refused unless a regular file."""
    import socket
    target = site["tmp"] / f"thing-{kind}"
    sock = None
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "dir":
        target.mkdir()
    elif kind == "device":
        target = "/dev/zero"
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(target))
    shim = install(site, base_policy(site))
    t = time.monotonic()
    p = subprocess.run([shim, "exec", str(target), "true"], capture_output=True, text=True, timeout=30)
    assert time.monotonic() - t < 20
    assert p.returncode == 1 and ("not a regular file" in p.stderr or "directory" in p.stderr
                                  or "cannot read" in p.stderr), p.stderr
    if sock:
        sock.close()


# --- the SPANK helper's view of a task ------------------------------------------------
@pytest.fixture
def spank_cfg(tmp_path):
    from sifguard.slurm.config import HookConfig
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "apptainer").write_text("#!/bin/sh\n")
    os.chmod(shim / "apptainer", 0o755)
    real = tmp_path / "bin" / "apptainer"
    real.parent.mkdir()
    real.write_text("#!/bin/sh\n")
    os.chmod(real, 0o755)
    return HookConfig(policy="p", apptainer=str(real), singularity=str(real), shim_dir=str(shim))


def test_task_classification(tmp_path, spank_cfg):
    from sifguard.slurm.task_check import classify
    real = spank_cfg.apptainer
    os.symlink(real, tmp_path / "innocent")
    sif = tmp_path / "x.img"
    shutil.copyfile(ONE_GROUP, sif)
    os.chmod(sif, 0o755)
    os.mkfifo(tmp_path / "fifo")
    path = f"{tmp_path}/bin:/usr/bin:/bin"
    assert classify(["apptainer", "exec", "a.sif"], "/", path, spank_cfg)[0] == "shim"      # PATH: shim first
    assert classify([os.path.join(spank_cfg.shim_dir, "apptainer"), "exec"], "/", path, spank_cfg)[0] == "shim"
    assert classify([real, "exec", "a.sif"], "/", path, spank_cfg)[0] == "runtime"
    assert classify(["./innocent", "exec", "a.sif"], str(tmp_path), path, spank_cfg)[0] == "runtime"   # symlink
    assert classify([str(sif)], "/", path, spank_cfg)[0] == "sif"                                    # any name
    t = time.monotonic()
    assert classify(["./fifo"], str(tmp_path), path, spank_cfg)[0] == "other"                        # no hang
    assert classify(["/dev/zero"], "/", path, spank_cfg)[0] == "other"
    assert time.monotonic() - t < 5
    assert classify(["hostname"], "/", "/usr/bin:/bin", spank_cfg)[0] == "other"
    assert classify(["no-such-program"], "/", "/usr/bin:/bin", spank_cfg)[0] == "other"


def test_spank_helper_refuses_direct_runtime_and_checks_when_asked(site):
    """Direct runtime paths cannot be pinned: refused by default, verified with
    runtime.direct: check (a race the site accepts knowingly)."""
    import json
    shim = install(site, base_policy(site))
    hooks = site["tmp"] / "hooks"
    helper = hooks / "sifguard-spank-check"
    cfg = json.loads((hooks / "sifguard-slurm.json").read_text())
    uid, gid = os.getuid(), os.getgid()

    def run(*task):
        return subprocess.run([str(helper), "--config", str(hooks / "sifguard-slurm.json"), "--job-id", "0",
                               "--uid", str(uid), "--gid", str(gid), "--cwd", str(site["tmp"]), "--path",
                               "/usr/bin:/bin", "--", *map(str, task)], capture_output=True, text=True, timeout=60)
    assert run("apptainer", "exec", site["signed"], "true").returncode == 0                    # to the shim
    assert run(shim, "exec", site["signed"], "true").returncode == 0
    p = run(cfg["apptainer"], "exec", site["signed"], "true")
    assert p.returncode == 1 and "runtime.direct" in p.stderr and p.stderr.count("\n") == 1
    p = run(site["signed"])
    assert p.returncode == 1 and "executed directly" in p.stderr
    assert run("/bin/true").returncode == 0
    install(site, base_policy(site, "runtime: {direct: check}\n"))
    assert run(cfg["apptainer"], "exec", site["signed"], "true").returncode == 0
    unsigned = site["tmp"] / "unsigned.sif"
    shutil.copyfile(ONE_GROUP, unsigned)
    p = run(cfg["apptainer"], "exec", unsigned, "true")
    assert p.returncode == 1 and "not signed" in p.stderr
    p = run(cfg["apptainer"], "exec", "--no-such-flag", unsigned, "true")
    assert p.returncode == 1
    rows = [json.loads(x) for x in open(site["tmp"] / "audit.jsonl")]
    assert {r["hook"] for r in rows} == {"spank"}


# --- property: what the gate verifies is what the runtime runs --------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402

from test_runtime_grammar import command_lines  # noqa: E402
from tools import standin_runtime as ref  # noqa: E402


@pytest.fixture(scope="module")
def gate_env(tmp_path_factory):
    from sifguard.policy.loader import load
    from sifguard.slurm.gate import Gate
    d = tmp_path_factory.mktemp("gateprop")
    chain = SiteChain(d)
    shutil.copyfile(ONE_GROUP, d / "signed.sif")
    assert run_cli("sign", d / "signed.sif", "--key", chain.key_pem, "--cert", chain.bundle_pem).rc == 0
    shutil.copyfile(ONE_GROUP, d / "evil.sif")
    (d / "p.yaml").write_text(f"version: 1\ntrust: {{roots: [{chain.root_pem}]}}\nrevocation: {{mode: off}}\n"
                              "cache: {images: off}\n")
    return {"gate": Gate(load(str(d / "p.yaml")), "shim"), "d": str(d), "signed": sha(d / "signed.sif")}


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(case=command_lines())
def test_gate_pins_the_image_the_runtime_runs_or_refuses(gate_env, case):
    """For random command lines built from the real flag tables: either the gate refuses, or
    the runtime (the independent stand-in parser, with the same table) runs exactly the
    sealed copy the gate verified — never another operand, never the original path."""
    from sifguard.slurm import runtime_argv
    flavor, argv = case
    inv = runtime_argv.parse(argv, flavor)
    adm = gate_env["gate"].admit(inv, JobContext(user="u"), gate_env["d"], pin_image=True)
    final = list(argv)
    try:
        if adm.pinned_fd is not None:
            final[adm.image_index] = f"/proc/self/fd/{adm.pinned_fd}"
        out = ref.run(final, flavor)
        if not adm.allowed:
            return
        if out.kind == "image" and runtime_argv.scheme_of(out.image, flavor) is None:
            # a local image runs: it must be the pinned copy, holding the signed bytes
            assert adm.pinned_fd is not None and out.image == final[adm.image_index], (argv, out)
            with open(out.image, "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == gate_env["signed"]
        assert out.kind != "bundle"
    finally:
        if adm.pinned_fd is not None:
            os.close(adm.pinned_fd)
