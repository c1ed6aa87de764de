"""End to end: the PATH shim in front of the stand-in runtime (tests/tools/standin_runtime.py,
which reads argv the way Apptainer's cobra/pflag front end does and logs the image it would
start). Whatever the spelling, either the shim refuses or the image the runtime starts is the
sealed, verified copy (/proc/self/fd/N) — never the attacker's file."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import APPT, run_cli
from pki import SiteChain

STANDIN = os.path.join(os.path.dirname(__file__), "tools", "standin_runtime.py")


@pytest.fixture(scope="module")
def gate(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shimgrammar")
    site = SiteChain(tmp)
    signed = tmp / "signed.sif"
    shutil.copyfile(os.path.join(APPT, "images", "one-group.sif"), signed)
    assert run_cli("sign", signed, "--key", site.key_pem, "--cert", site.bundle_pem).rc == 0
    evil = tmp / "evil.sif"
    shutil.copyfile(os.path.join(APPT, "images", "one-group.sif"), evil)
    real = tmp / "apptainer-real"
    real.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
    os.chmod(real, 0o755)
    pol = tmp / "policy.yaml"
    pol.write_text(f"version: 1\ntrust: {{roots: [{site.root_pem}]}}\nrevocation: {{mode: off}}\n"
                   f"cache: {{images: off}}\n")
    r = run_cli("slurm", "install", "--prefix", tmp / "hooks", "--policy", pol, "--apptainer", real,
                "--singularity", real, "--no-spank", "--slurm-conf", tmp / "slurm.conf")
    assert r.rc == 0, r
    exe = str(tmp / "hooks" / "shim" / "apptainer")
    log = tmp / "standin.log"

    def run(line):
        args = [{"SIGNED": str(signed), "EVIL": str(evil)}.get(w, w) for w in line.split()]
        if log.exists():
            log.unlink()
        p = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, cwd=tmp,
                           env=dict(os.environ, SIFGUARD_STANDIN_LOG=str(log)))
        rec = json.loads(log.read_text().splitlines()[-1]) if log.exists() else None
        return p, rec
    return run


@pytest.mark.parametrize("line", [
    "exec --no-env SIGNED EVIL true", "exec --tmpdir SIGNED EVIL true", "exec --docker-username SIGNED EVIL true",
    "exec --netns-path SIGNED EVIL true", "exec --device SIGNED EVIL true", "exec --cdi-dirs SIGNED EVIL true",
    "exec -eB SIGNED EVIL true", "exec -eo SIGNED EVIL true", "-c SIGNED exec EVIL true",
    "-c exec run EVIL", "-- exec run EVIL", "instance start --pid-file SIGNED EVIL web",
    "exec -- EVIL true", "run-help --app x EVIL", "inspect --json EVIL",
])
def test_attacker_spellings_never_run_the_unsigned_image(gate, line):
    p, rec = gate(line)
    assert p.returncode == 1 and "refused" in p.stderr, (p.stdout, p.stderr)
    assert rec is None                                   # the runtime was never started


@pytest.mark.parametrize("line", [
    "exec --nv SIGNED true", "exec -eC --bind /tmp SIGNED true", "exec --nv=false -B/tmp SIGNED true",
    "--debug -q exec -e SIGNED true", "run SIGNED arg --bogus", "exec SIGNED --no-env EVIL",
    "instance start -B /tmp SIGNED web", "exec -- SIGNED true",
])
def test_signed_image_runs_as_the_verified_copy(gate, line):
    p, rec = gate(line)
    assert p.returncode == 0, p.stderr
    assert rec["outcome"] == "image" and rec["image"].startswith("/proc/self/fd/"), rec


@pytest.mark.parametrize("line", [
    "exec --bogus SIGNED true", "exec -test.v SIGNED true", "frobnicate SIGNED", "exec --oci SIGNED true",
    "exec SIGNED", "oci run -b /tmp/bundle id",
])
def test_not_understood_is_refused(gate, line):
    p, rec = gate(line)
    assert p.returncode == 1 and "not understood" in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert rec is None


def test_spank_check_main_decides_the_runtimes_image(tmp_path):
    from sifguard.slurm import task_check
    site = SiteChain(tmp_path)
    signed = tmp_path / "signed.sif"
    shutil.copyfile(os.path.join(APPT, "images", "one-group.sif"), signed)
    assert run_cli("sign", signed, "--key", site.key_pem, "--cert", site.bundle_pem).rc == 0
    evil = tmp_path / "evil.sif"
    shutil.copyfile(os.path.join(APPT, "images", "one-group.sif"), evil)

    runtime = tmp_path / "bin" / "apptainer"      # the real runtime's place (a stand-in file)
    runtime.parent.mkdir()
    runtime.write_text("#!/bin/sh\n")
    os.chmod(runtime, 0o755)

    def check(task, sources="[local]"):
        """The runtime called by path, with runtime.direct: check (verified, not refused outright)."""
        pol = tmp_path / "policy.yaml"
        pol.write_text(f"version: 1\ntrust: {{roots: [{site.root_pem}]}}\nrevocation: {{mode: off}}\n"
                       f"cache: {{images: off}}\nruntime: {{allow_sources: {sources}, direct: check}}\n")
        conf = tmp_path / "hooks.json"
        conf.write_text(json.dumps({"policy": str(pol), "apptainer": str(runtime), "singularity": str(runtime)}))
        task = task.replace("apptainer ", f"{runtime} ", 1)
        return task_check.main(["--config", str(conf), "--uid", str(os.getuid()), "--gid", str(os.getgid()),
                                "--cwd", str(tmp_path), "--", *task.split()])
    assert check(f"apptainer exec --nv {signed} ls") == 0
    assert check(f"apptainer exec --no-env {signed} {evil} ls") == 1
    assert check(f"apptainer exec -eB {signed} {evil} ls") == 1
    assert check(f"apptainer exec --bogus {signed} ls") == 1
    assert check("apptainer exec docker:alpine ls") == 1          # a transport, though written without //
    assert check("apptainer exec docker:alpine ls", "[local, docker]") == 0
    assert check("apptainer exec DOCKER://alpine ls", "[local, docker]") == 1
    assert check("apptainer version") == 0
