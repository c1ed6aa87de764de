"""Submit-time feedback (`sifguard slurm precheck`, what cli_filter.lua calls): real job
scripts through the prolog's scanner, real images and certificates, a real policy. The real
Slurm path (sbatch/srun through cli_filter/lua) is in tests/test_slurm_cluster.py."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import APPT, run_cli
from pki import SiteChain, write

from sifguard.policy.loader import load
from sifguard.slurm.precheck import OK, REFUSE, WARN, precheck

SRC = os.path.join(APPT, "images", "one-group.sif")


@pytest.fixture
def env(tmp_path):
    site = SiteChain(tmp_path)
    other = SiteChain(tmp_path, cn="stranger")
    imgs = tmp_path / "imgs"
    imgs.mkdir()

    def img(name, key=None, cert=None):
        p = imgs / name
        shutil.copyfile(SRC, p)
        if key:
            assert run_cli("sign", p, "--key", key, "--cert", cert).rc == 0
        return str(p)
    img("signed.sif", site.key_pem, site.bundle_pem)
    img("unsigned.sif")
    img("foreign.sif", other.key_pem, other.bundle_pem)
    data = img("data-changed.sif", site.key_pem, site.bundle_pem)
    with open(data, "r+b") as f:            # a byte of the partition: only hashing finds it
        f.seek(36864)
        f.write(b"X")
    head = img("header-changed.sif", site.key_pem, site.bundle_pem)
    with open(head, "r+b") as f:            # the launch script: covered by the header digest
        f.seek(0)
        f.write(b"#!/bin/false\n")
    (imgs / "trial").mkdir()
    img("trial/unsigned.sif")
    pol = write(tmp_path / "policy.yaml", f"""version: 1
trust: {{roots: [{site.root_pem}]}}
revocation: {{mode: off}}
audit: {{log: {tmp_path / 'audit.jsonl'}}}
cache: {{images: {tmp_path / 'imgcache'}}}
runtime: {{allow_sources: [local, docker]}}
rules:
  - name: trial-in-debug
    match: {{path: "{imgs}/trial/*", partition: debug}}
    action: audit
  - name: default
    require: signed
""".encode())
    return {"dir": tmp_path, "imgs": imgs, "policy": pol, "site": site}


def script(env, body, name="job.sh"):
    p = env["dir"] / name
    p.write_text("#!/bin/bash\n#SBATCH -n 1\n" + body + "\n")
    return str(p)


def levels(out):
    return [(n.level, n.where) for n in out.notes]


def test_script_lines_and_verdicts(env):
    I = env["imgs"]
    s = script(env, f"""echo start
apptainer exec {I}/signed.sif true
apptainer run {I}/unsigned.sif
singularity exec {I}/foreign.sif ls
apptainer exec {I}/header-changed.sif true
apptainer exec $RUNTIME_IMAGE true
apptainer exec docker://alpine true
apptainer exec oras://x/y true""")
    out = precheck(load(env["policy"]), [s], env={"PATH": "/usr/bin:/bin"})
    got = {n.where: (n.level, n.message) for n in out.notes}
    assert got["job.sh:4"][0] == OK
    assert got["job.sh:5"][0] == REFUSE and "not signed" in got["job.sh:5"][1]
    assert got["job.sh:6"][0] == REFUSE and "trusted" in got["job.sh:6"][1]
    assert got["job.sh:7"][0] == REFUSE and "header" in got["job.sh:7"][1]
    assert got["job.sh:8"][0] in (WARN, REFUSE)          # $RUNTIME_IMAGE unset here: the scanner decides
    assert "job.sh:9" not in got                          # docker allowed by the policy: nothing to say
    assert got["job.sh:10"][0] == REFUSE and "oras" in got["job.sh:10"][1]
    assert out.refused
    assert all(line.startswith(("error: sifguard: job.sh:", "warning: sifguard: job.sh:")) for line in out.lines())


def test_data_is_not_hashed_at_submission(env):
    """The quick look reads signatures, header and descriptors, not the data: a changed data
    byte is found by the prolog, not here (any image size costs the same at submission)."""
    s = script(env, f"apptainer exec {env['imgs']}/data-changed.sif true")
    out = precheck(load(env["policy"]), [s])
    assert levels(out) == [(OK, "job.sh:3")]
    r = run_cli("verify", f"{env['imgs']}/data-changed.sif", "--policy", env["policy"])
    assert r.rc == 1 and "changed" in r.err


def test_cached_verdicts_are_exact(env):
    """An image the verified-image cache knows is judged from its record (hashed content)."""
    p = f"{env['imgs']}/signed.sif"
    assert run_cli("verify", p, "--policy", env["policy"]).rc == 0         # fills the image cache
    out = precheck(load(env["policy"]), [script(env, f"apptainer exec {p} true")])
    assert levels(out) == [(OK, "job.sh:3")] and "hit" not in out.notes[0].message


def test_partition_dependent_rules_warn_unless_named(env):
    s = script(env, f"apptainer exec {env['imgs']}/trial/unsigned.sif true")
    assert levels(precheck(load(env["policy"]), [s])) == [(WARN, "job.sh:3")]            # partition not given
    assert levels(precheck(load(env["policy"]), [s], partition="debug")) == [(OK, "job.sh:3")]
    assert levels(precheck(load(env["policy"]), [s], partition="batch")) == [(REFUSE, "job.sh:3")]


def test_srun_command_lines_and_wrap(env):
    I = env["imgs"]
    out = precheck(load(env["policy"]), ["apptainer", "exec", f"{I}/unsigned.sif", "ls"])
    assert levels(out) == [(REFUSE, "command")]
    out = precheck(load(env["policy"]), [], wrap=f"apptainer exec {I}/signed.sif ls")
    assert levels(out) == [(OK, "--wrap:2")]
    out = precheck(load(env["policy"]), ["hostname"])
    assert out.notes == []
    assert precheck(load(env["policy"]), []).notes == []          # a script from stdin: nothing to look at


def test_missing_image_and_relative_paths(env, monkeypatch):
    monkeypatch.chdir(env["imgs"])
    s = script(env, "apptainer exec ./signed.sif true\napptainer exec ./not-yet.sif true")
    out = precheck(load(env["policy"]), [s], cwd=str(env["imgs"]))
    assert levels(out) == [(OK, "job.sh:3"), (WARN, "job.sh:4")]


def test_cli_output_for_the_lua_filter(env):
    s = script(env, f"apptainer run {env['imgs']}/unsigned.sif")
    p = subprocess.run([sys.executable, "-m", "sifguard", "slurm", "precheck", "--policy", env["policy"], "--lua",
                        "--", s], capture_output=True, text=True)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    lines = p.stdout.splitlines()
    assert lines[-1] == "result: refuse"
    assert lines[0].startswith("error: sifguard: job.sh:3: ") and "not signed" in lines[0]
    # our own failure is a warning, never a refusal: the prolog decides
    p = subprocess.run([sys.executable, "-m", "sifguard", "slurm", "precheck", "--policy", "/nonexistent.yaml",
                        "--lua", "--", s], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.splitlines()[-1] == "result: ok" and "warning: sifguard" in p.stdout


def test_lua_filter_quotes_every_argument(tmp_path):
    """The filter builds a shell command from the user's argv: every word single-quoted."""
    lua = shutil.which("lua5.1") or shutil.which("lua")
    if lua is None:
        pytest.skip("no standalone lua interpreter here (the cluster test runs the real plugin)")
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "prolog",
                       "sifguard-cli-filter.lua")
    rec = tmp_path / "argv.json"
    fake = write(tmp_path / "precheck", f"""#!{sys.executable}
import json, sys
json.dump(sys.argv[1:], open({str(rec)!r}, "w"))
print("error: sifguard: x: refused")
print("result: refuse")
""".encode(), 0o755)
    text = open(src).read().replace("@PRECHECK@", fake)
    harness = write(tmp_path / "h.lua", (text + """
slurm = slurm or {}
""").encode())
    driver = write(tmp_path / "d.lua", f"""
slurm = {{SUCCESS = 0, ERROR = -1, log_error = function(f, m) io.stderr:write("E:" .. m .. "\\n") end,
          log_info = function(f, m) io.stderr:write("I:" .. m .. "\\n") end}}
dofile({str(harness)!r})
local opts = {{argv = {{"a b", "it's", "$(touch {tmp_path}/pwned)", ";rm -rf /"}}, partition = "x'y"}}
os.exit(slurm_cli_pre_submit(opts, 0) == slurm.ERROR and 3 or 0)
""".encode())
    p = subprocess.run([lua, driver], capture_output=True, text=True, env={k: v for k, v in os.environ.items()
                                                                            if k != "SLURM_JOB_ID"})
    assert p.returncode == 3 and ": error: sifguard: x: refused" in p.stderr, p
    got = json.load(open(rec))
    assert got[-4:] == ["a b", "it's", f"$(touch {tmp_path}/pwned)", ";rm -rf /"]
    assert "--partition" in got and got[got.index("--partition") + 1] == "x'y"
    assert not (tmp_path / "pwned").exists()


def test_store_records_make_the_answer_exact(env, tmp_path):
    """An image the verified image store staged is judged from the store's findings record
    (its content was hashed when it was staged): a data change the quick look cannot see is
    caught once the store knows the bytes."""
    store = tmp_path / "store"
    p = f"{env['imgs']}/data-changed.sif"
    r = run_cli("store", "stage", p, "--store", store, "--policy", env["policy"])
    assert r.rc in (0, 1), r                     # staged (and refused: its data changed)
    s = script(env, f"apptainer exec {p} true")
    quick = precheck(load(env["policy"]), [s])
    exact = precheck(load(env["policy"]), [s], store=str(store))
    assert levels(quick) == [(OK, "job.sh:3")]
    assert levels(exact) == [(REFUSE, "job.sh:3")] and "changed" in exact.notes[0].message
