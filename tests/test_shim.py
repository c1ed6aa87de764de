"""The runtime shim without Slurm: `sifguard slurm install --no-spank` into a temporary
prefix, and a stand-in for Apptainer (not installable here) that records its argv and,
for `exec IMAGE CMD…`, runs CMD."""
import os
import shutil
import subprocess

import pytest

from conftest import APPT, run_cli
from pki import SiteChain


@pytest.fixture
def shim(tmp_path):
    site = SiteChain(tmp_path)
    signed = tmp_path / "signed.sif"
    shutil.copyfile(os.path.join(APPT, "images", "one-group.sif"), signed)
    assert run_cli("sign", signed, "--key", site.key_pem, "--cert", site.bundle_pem).rc == 0
    unsigned = tmp_path / "unsigned.sif"
    shutil.copyfile(os.path.join(APPT, "images", "one-group.sif"), unsigned)
    log = tmp_path / "argv.log"
    standin = tmp_path / "apptainer-real"
    standin.write_text(f'#!/bin/sh\necho "$@" >> {log}\n[ "$1" = exec ] && {{ shift 2; exec "$@"; }}\nexit 0\n')
    os.chmod(standin, 0o755)

    def install(runtime_yaml=""):
        pol = tmp_path / "policy.yaml"
        pol.write_text(f"version: 1\ntrust: {{roots: [{site.root_pem}]}}\nrevocation: {{mode: off}}\n"
                       f"cache: {{images: off}}\n{runtime_yaml}")
        r = run_cli("slurm", "install", "--prefix", tmp_path / "hooks", "--policy", pol, "--apptainer", standin,
                    "--singularity", standin, "--no-spank", "--slurm-conf", tmp_path / "slurm.conf")
        assert r.rc == 0, r
        return str(tmp_path / "hooks" / "shim" / "apptainer")

    def run(*args, runtime_yaml=""):
        exe = install(runtime_yaml)
        p = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=60)
        return p
    return {"run": run, "signed": signed, "unsigned": unsigned, "log": log, "tmp": tmp_path}


def test_signed_image_runs_on_a_sealed_copy(shim):
    p = shim["run"]("exec", shim["signed"], "sh", "-c", "for fd in /proc/self/fd/*; do readlink $fd; done")
    assert p.returncode == 0, p.stderr
    assert "memfd:sifguard-verified.sif" in p.stdout       # the runtime holds the sealed copy
    p = shim["run"]("run", "--bind", "/tmp", "-C", shim["signed"], "arg")
    assert p.returncode == 0, p.stderr
    argv = shim["log"].read_text().splitlines()[-1].split()
    assert argv[:4] == ["run", "--bind", "/tmp", "-C"] and argv[4].startswith("/proc/self/fd/") and argv[5] == "arg"


def test_unsigned_refused_in_one_line(shim):
    p = shim["run"]("run", shim["unsigned"])
    assert p.returncode == 1 and p.stderr.startswith("sifguard: refused:") and p.stderr.count("\n") == 1
    assert not shim["log"].exists()


def test_pass_through_commands(shim):
    for args in (["version"], ["--version"], ["help", "exec"], ["instance", "list"]):
        p = shim["run"](*args)
        assert p.returncode == 0, (args, p.stderr)


def test_instances_are_a_source_like_any_other(shim):
    """`instance://` runs whatever the instance was started from — possibly outside the
    shim — so it is allowed only where the policy says so (the controller prolog and
    the shim used to disagree on this)."""
    assert shim["run"]("exec", "instance://web", "ls").returncode == 1
    p = shim["run"]("exec", "instance://web", "ls", runtime_yaml="runtime: {allow_sources: [local, instance]}\n")
    assert p.returncode == 0, p.stderr
    # the scheme is one source whatever its case
    assert shim["run"]("exec", "DOCKER://alpine", "true",
                       runtime_yaml="runtime: {allow_sources: [local, instance]}\n").returncode == 1


@pytest.mark.parametrize("uri", ["docker://alpine", "library://a/b/c:1", "oras://reg/x:1", "shub://a/b"])
def test_remote_sources_only_where_allowed(shim, uri):
    assert shim["run"]("exec", uri, "true").returncode == 1
    scheme = uri.split("://")[0]
    p = shim["run"]("exec", uri, "true", runtime_yaml=f"runtime: {{allow_sources: [local, {scheme}]}}\n")
    assert p.returncode == 0, p.stderr


def test_build_and_pull_per_policy(shim):
    p = shim["run"]("build", "x.sif", "docker://alpine")
    assert p.returncode == 1 and "not allowed" in p.stderr
    assert shim["run"]("pull", "docker://alpine").returncode == 1
    assert shim["run"]("pull", "docker://alpine",
                       runtime_yaml="runtime: {allow_pull: true}\n").returncode == 0


def test_missing_and_non_sif_images(shim, tmp_path):
    p = shim["run"]("exec", tmp_path / "nope.sif", "true")
    assert p.returncode == 1 and "no such file" in p.stderr
    junk = tmp_path / "junk.sif"
    junk.write_bytes(b"not a sif at all")
    p = shim["run"]("exec", junk, "true")
    assert p.returncode == 1 and "refused" in p.stderr and "Traceback" not in p.stderr


def test_broken_policy_refuses_in_one_line(shim):
    exe = shim["run"]("version") and str(shim["tmp"] / "hooks" / "shim" / "apptainer")
    (shim["tmp"] / "policy.yaml").write_text("version: 1\ntrust: [oops\n")
    p = subprocess.run([exe, "exec", str(shim["signed"]), "true"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1
