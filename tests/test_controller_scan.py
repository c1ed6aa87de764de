"""The controller prolog honours the scanner: resolved images decided, malformed static
runtime lines refused, deferred lines logged and left to the runtime hooks (real signed
images, real policy engine)."""
import json
import os
import shutil

import pytest

from conftest import APPT, run_cli
from pki import SiteChain
from sifguard.policy.loader import load
from sifguard.slurm.config import HookConfig
from sifguard.slurm.controller import decide_job
from sifguard.slurm.gate import Gate
from sifguard.slurm.jobinfo import Job


@pytest.fixture
def site(tmp_path):
    chain = SiteChain(tmp_path, cn="builder", email="builder@hpc.example.org")
    good = tmp_path / "good.sif"
    shutil.copyfile(os.path.join(APPT, "images", "one-group.sif"), good)
    assert run_cli("sign", good, "--key", chain.key_pem, "--cert", chain.bundle_pem).rc == 0
    evil = tmp_path / "evil.sif"
    shutil.copyfile(os.path.join(APPT, "images", "one-group.sif"), evil)
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"version: 1\ntrust: {{roots: [{chain.root_pem}]}}\nrevocation: {{mode: off}}\n"
                      f"audit: {{log: {tmp_path}/audit.jsonl}}\ncache: {{images: {tmp_path}/cache}}\n"
                      "rules:\n  - name: default\n    require: signed\n")
    return tmp_path, str(policy)


def decide(site, script):
    d, policy = site
    job = Job("7", env_complete=True, user="u", uid=os.getuid(), gid=os.getgid(), work_dir=str(d), script="#!/bin/bash\n" + script,
              env={"HOME": str(d)})
    reasons = decide_job(HookConfig(policy=policy), job, Gate(load(policy), "prolog-slurmctld"))
    audit = [json.loads(x) for x in (d / "audit.jsonl").read_text().splitlines()] if (d / "audit.jsonl").exists() \
        else []
    return reasons, audit


def test_signed_image_found_in_a_construct_passes(site):
    reasons, _ = decide(site, "if true; then srun apptainer exec good.sif true; fi\n")
    assert reasons == []


@pytest.mark.parametrize("script", [
    "IMG=good.sif\nif [ -n \"$X\" ]; then :; fi\napptainer run evil.sif\n",
    "bash <<EOF\napptainer run evil.sif\nEOF\n",
    "{ apptainer run evil.sif; }\n",
    "echo 'apptainer run evil.sif' | sh\n",
    "f() { singularity exec evil.sif ls; }\n",
])
def test_unsigned_image_in_any_construct_is_refused(site, script):
    reasons, _ = decide(site, script)
    assert len(reasons) == 1 and "evil.sif" in reasons[0]


def test_malformed_static_runtime_line_is_refused(site):
    reasons, audit = decide(site, "apptainer exec\n")
    assert len(reasons) == 1 and "line 2" in reasons[0] and "image" in reasons[0]
    assert audit[-1]["decision"] == "refuse"


def test_reassigned_variable_is_deferred_not_checked_against_the_first_value(site):
    reasons, audit = decide(site, "IMG=good.sif\nwhile read -r IMG; do break; done < list\napptainer run $IMG\n")
    assert reasons == []
    assert [a["decision"] for a in audit] == ["deferred"] and audit[0]["line"] == 4
