"""The decision engine end to end: image cache, signer rules, audit log, CLI verdicts."""
import json
import os
import shutil

import pytest

from conftest import APPT, run_cli
from pki import SiteChain
from sifguard.enforce.decide import Engine
from sifguard.policy.decide import JobContext
from sifguard.policy.loader import load


@pytest.fixture
def env(tmp_path):
    site = SiteChain(tmp_path, cn="builder", email="builder@hpc.example.org")
    other = SiteChain(tmp_path, cn="outsider", email="x@elsewhere.org")
    imgs = {}
    for name, c in (("builder", site), ("outsider", other)):
        p = tmp_path / f"{name}.sif"
        shutil.copyfile(os.path.join(APPT, "images", "one-group.sif"), p)
        assert run_cli("sign", p, "--key", c.key_pem, "--cert", c.bundle_pem).rc == 0
        imgs[name] = str(p)
    imgs["unsigned"] = str(tmp_path / "unsigned.sif")
    shutil.copyfile(os.path.join(APPT, "images", "one-group.sif"), imgs["unsigned"])
    cache = tmp_path / "imgcache"
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""
version: 1
trust:
  roots: [{site.root_pem}, {other.root_pem}]
revocation: {{mode: off}}
audit: {{log: {tmp_path}/audit.jsonl}}
cache: {{images: {cache}}}
rules:
  - name: builders-only
    match: {{path: "{tmp_path}/*.sif", account: prod}}
    signers: [{{email: "*@hpc.example.org"}}]
  - name: trial
    match: {{path: "{tmp_path}/*.sif", partition: debug}}
    action: audit
  - name: default
    require: signed
""")
    return {"site": site, "imgs": imgs, "policy": str(policy), "cache": cache, "tmp": tmp_path}


def test_image_cache_hit_miss_and_invalidation(env):
    eng = Engine(load(env["policy"]))
    img = env["imgs"]["builder"]
    v1 = eng.decide(img)
    assert v1.allowed and v1.image_cache == "miss"
    v2 = eng.decide(img)
    assert v2.allowed and v2.image_cache == "hit" and v2.signers == v1.signers
    os.utime(img)                                  # touch: ctime changes
    assert eng.decide(img).image_cache == "miss"
    # rewrite one byte of the partition in place: cache entry no longer applies, refused
    with open(img, "r+b") as f:
        f.seek(36864)
        b = f.read(1)
        f.seek(36864)
        f.write(bytes([b[0] ^ 1]))
    v = eng.decide(img)
    assert not v.allowed and v.image_cache == "miss" and "changed" in v.reason


def test_untrusted_cache_dir_ignored(env):
    eng = Engine(load(env["policy"]))
    img = env["imgs"]["builder"]
    eng.decide(img)
    os.chmod(env["cache"], 0o777)                  # others could forge entries: never read
    assert eng.decide(img).image_cache == "miss"
    os.chmod(env["cache"], 0o755)
    assert eng.decide(img).image_cache == "hit"


def test_forged_cache_entry_for_other_file_not_used(env):
    eng = Engine(load(env["policy"]))
    good, bad = env["imgs"]["builder"], env["imgs"]["unsigned"]
    eng.decide(good)
    # copy the good image's entry over the name the unsigned image would use: keys differ
    entries = list(env["cache"].iterdir())
    assert len(entries) == 1
    st = os.stat(bad)
    shutil.copyfile(entries[0], env["cache"] / eng.image_cache._name(st))
    assert not eng.decide(bad).allowed


def test_signer_rule_and_audit(env):
    eng = Engine(load(env["policy"]))
    prod = JobContext(user="u", account="prod")
    v = eng.decide(env["imgs"]["builder"], prod)
    assert v.allowed and v.rule == "builders-only"
    v = eng.decide(env["imgs"]["outsider"], prod)
    assert not v.allowed and "does not allow" in v.reason and "outsider" in v.reason
    v = eng.decide(env["imgs"]["outsider"], JobContext(account="other"))
    assert v.allowed and v.rule == "default"       # any trusted signer under the default rule
    v = eng.decide(env["imgs"]["unsigned"], JobContext(partition="debug"))
    assert v.allowed and v.decision == "audit" and "would refuse" in v.reason
    rows = [json.loads(line) for line in open(env["tmp"] / "audit.jsonl")]
    assert [r["decision"] for r in rows] == ["allow", "refuse", "allow", "audit"]
    assert rows[1]["context"]["account"] == "prod" and rows[1]["rule"] == "builders-only"


def test_cli_verify_with_policy(env, cli):
    r = cli("verify", env["imgs"]["builder"], "--policy", env["policy"], "--account", "prod", "--json")
    assert r.rc == 0, r
    d = json.loads(r.out)
    assert d["allowed"] and d["rule"] == "builders-only" and d["signers"][0]["email"] == ["builder@hpc.example.org"]
    assert d["revocation_source"] == "off"
    r = cli("verify", env["imgs"]["outsider"], "--policy", env["policy"], "--account", "prod")
    assert r.rc == 1 and "builders-only" in r.err and r.err.count("\n") == 1
    r = cli("verify", env["imgs"]["unsigned"], "--policy", env["policy"])
    assert r.rc == 1 and "not signed" in r.err
    r = cli("verify", env["tmp"] / "missing.sif", "--policy", env["policy"])
    assert r.rc == 2
    r = cli("verify", env["imgs"]["builder"], "--policy", env["policy"], "--roots", env["site"].root_pem)
    assert r.rc == 2


def test_symlink_is_matched_by_its_target(env, tmp_path):
    """Rules match the resolved path: a link placed under a lenient rule's glob does not
    borrow that rule for an image stored elsewhere."""
    d = tmp_path / "elsewhere"
    d.mkdir()
    target = d / "x.sif"
    shutil.copyfile(env["imgs"]["unsigned"], target)
    link = tmp_path / "link.sif"
    os.symlink(target, link)
    v = Engine(load(env["policy"])).decide(str(link), JobContext(partition="debug"))
    assert v.image == str(target) and v.rule == "default" and not v.allowed
