"""Policy file: schema validation with file:line errors, rule fields, first-match order."""
import os
import textwrap

import pytest

from pki import SiteChain
from sifguard.policy import decide as pd
from sifguard.policy.loader import PolicyError, load
from sifguard.policy.model import DEFAULT_RULE
from sifguard.x509.chain import identity


def write(tmp_path, text, name="p.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


@pytest.fixture
def root(tmp_path):
    return SiteChain(tmp_path).root_pem


FULL = """\
version: 1
trust:
  roots: [{root}]
revocation:
  mode: soft-fail
  timeout: 1.5
  retries: 2
  nonce: true
  crl_fallback: false
  cache_dir: cache
  shared_cache_dir: /shared/sifguard
  max_age: 600
  clock_skew: 30
  responders:
    - {{issuer: "CN=Site Issuing CA*", url: "http://127.0.0.1:9/"}}
audit:
  log: audit.jsonl
cache:
  images: off
runtime:
  allow_sources: [local, docker, oras]
  apptainer: /opt/apptainer/bin/apptainer
  allow_pull: true
rules:
  - name: scratch-trial
    match: {{path: "/scratch/*/trial/*.sif", partition: debug}}
    action: audit
  - name: site-builders
    match: {{path: "/apps/containers/**", account: [physics, chem*], user: "a*", group: hpc}}
    require: signed
    revocation: {{mode: enforce}}
    signers:
      - {{email: "*@hpc.example.org"}}
      - {{subject: "CN=builder,*"}}
      - {{fingerprint: "sha256:{fp}"}}
      - {{issuer: "CN=Site Issuing CA"}}
  - name: anything-goes
    match: {{path: "/tmp/**"}}
    require: any
  - name: default
    require: signed
"""


def test_full_policy_loads(tmp_path, root):
    p = load(write(tmp_path, FULL.format(root=root, fp="ab" * 32)))
    r = p.revocation
    assert (r.mode, r.timeout, r.retries, r.nonce, r.crl_fallback, r.max_age, r.clock_skew) == \
        ("soft-fail", 1.5, 2, True, False, 600, 30)
    assert r.cache_dir == str(tmp_path / "cache") and r.shared_cache_dir == "/shared/sifguard"
    assert r.responders[0].url == "http://127.0.0.1:9/"
    assert p.audit_log == str(tmp_path / "audit.jsonl") and p.image_cache is None
    assert p.runtime.allow_sources == ("local", "docker", "oras") and p.runtime.allow_pull
    assert [x.name for x in p.rules] == ["scratch-trial", "site-builders", "anything-goes", "default"]
    sb = p.rules[1]
    assert sb.revocation_mode == "enforce" and len(sb.signers) == 4 and sb.signers[2].fingerprint == "ab" * 32
    assert sb.match.account == ("physics", "chem*") and sb.line == 28


def test_policy_check_cli(cli, tmp_path, root):
    r = cli("policy", "check", write(tmp_path, FULL.format(root=root, fp="ab" * 32)))
    assert r.rc == 0 and "scratch-trial" in r.out and "default (built-in)" in r.out


BAD = [
    ("version: 1\ntrust:\n  roots: [R]\nrevokation:\n  mode: enforce\n", 4, "unknown key 'revokation'", "did you mean 'revocation'"),
    ("version: 2\ntrust: {roots: [R]}\n", 1, "version must be between 1 and 1", None),
    ("trust: {roots: [R]}\n", 1, "missing 'version", None),
    ("version: 1\n", 1, "missing 'trust'", None),
    ("version: 1\ntrust: {roots: []}\n", 2, "trust.roots is empty", None),
    ("version: 1\ntrust: {roots: [R]}\nrevocation:\n  mode: strict\n", 4, "revocation.mode must be one of", None),
    ("version: 1\ntrust: {roots: [R]}\nrevocation:\n  timeout: soon\n", 4, "must be a number", None),
    ("version: 1\ntrust: {roots: [R]}\nrevocation:\n  timeout: 600\n", 4, "between", None),
    ("version: 1\ntrust: {roots: [R]}\nrules:\n  - match: {path: x}\n", 4, "needs a 'name'", None),
    ("version: 1\ntrust: {roots: [R]}\nrules:\n  - name: a\n  - name: a\n", 5, "duplicate rule name", None),
    ("version: 1\ntrust: {roots: [R]}\nrules:\n  - name: a\n    acton: audit\n", 5, "unknown key 'acton'", "did you mean 'action'"),
    ("version: 1\ntrust: {roots: [R]}\nrules:\n  - name: a\n    action: maybe\n", 5, "action must be one of", None),
    ("version: 1\ntrust: {roots: [R]}\nrules:\n  - name: a\n    match: {partitoin: x}\n", 5, "unknown key 'partitoin'", None),
    ("version: 1\ntrust: {roots: [R]}\nrules:\n  - name: a\n    signers:\n      - {fingerprint: nope}\n", 6, "fingerprint", None),
    ("version: 1\ntrust: {roots: [R]}\nrules:\n  - name: a\n    signers:\n      - {}\n", 6, "would match anyone", None),
    ("version: 1\ntrust: {roots: [R]}\nrules:\n  - name: a\n    signers: []\n", 5, "non-empty list", None),
    ("version: 1\ntrust: {roots: [R]}\nrules:\n  - name: a\n    require: any\n    signers: [{email: x}]\n", 4, "contradictory", None),
    ("version: 1\ntrust: {roots: [R]}\nruntime:\n  allow_sources: [ftp]\n", 4, "unknown image source", None),
    ("version: 1\ntrust: {roots: [R]}\nrevocation:\n  responders:\n    - {url: http://x}\n", 5, "needs 'issuer' and 'url'", None),
    ("version: 1\ntrust: {roots: [R]}\nrules: {name: a}\n", 3, "rules must be a list", None),
    ("version: 1\ntrust: {roots: [R]\n", 3, "invalid YAML", None),
    ("version: 1\nversion: 1\ntrust: {roots: [R]}\n", 2, "duplicate key", None),
    ("", 1, "empty policy", None),
]


@pytest.mark.parametrize("text,line,msg,hint", BAD, ids=[b[2][:30] for b in BAD])
def test_malformed_policies(tmp_path, cli, text, line, msg, hint):
    p = write(tmp_path, text, "bad.yaml")
    with pytest.raises(PolicyError) as e:
        load(p)
    s = str(e.value)
    assert s.startswith(f"{p}:{line}: ") and msg in s, s
    if hint:
        assert hint in s
    r = cli("policy", "check", p)
    assert r.rc == 2 and r.err.count("\n") == 1


def test_missing_root_file_is_bad_input(tmp_path, cli):
    r = cli("policy", "check", write(tmp_path, "version: 1\ntrust: {roots: [/nonexistent.pem]}\n"))
    assert r.rc == 2 and "nonexistent.pem" in r.err


def test_roots_directory(tmp_path, cli):
    d = tmp_path / "roots"
    d.mkdir()
    SiteChain(d, cn="a")
    r = cli("policy", "check", write(tmp_path, f"version: 1\ntrust: {{roots: [{d}]}}\n"))
    assert r.rc == 0 and "certificate(s)" in r.out


# --- matching (pure) --------------------------------------------------------------------
@pytest.fixture
def pol(tmp_path, root):
    return load(write(tmp_path, FULL.format(root=root, fp="ab" * 32)))


@pytest.mark.parametrize("image,ctx,want", [
    ("/scratch/alice/trial/x.sif", pd.JobContext(partition="debug"), "scratch-trial"),
    ("/scratch/alice/trial/x.sif", pd.JobContext(partition="batch"), "default"),          # partition must match
    ("/scratch/alice/deep/trial/x.sif", pd.JobContext(partition="debug"), "default"),     # * stays in a segment
    ("/apps/containers/a/b/c.sif", pd.JobContext(user="ann", group="hpc", account="chemistry"), "site-builders"),
    ("/apps/containers/c.sif", pd.JobContext(user="bob", group="hpc", account="physics"), "default"),   # user a*
    ("/apps/containers/c.sif", pd.JobContext(user="ann", group="other", account="physics"), "default"),
    ("/apps/containers/c.sif", pd.JobContext(user="ann", group="hpc"), "default"),          # account required
    ("/tmp/x/y.sif", pd.JobContext(), "anything-goes"),
    ("/home/x.sif", pd.JobContext(), "default"),
])
def test_rule_matching_first_match_wins(pol, image, ctx, want):
    assert pd.match_rule(pol, image, ctx).name == want


def test_unmatched_falls_to_builtin_default(tmp_path, root):
    p = load(write(tmp_path, f"version: 1\ntrust: {{roots: [{root}]}}\nrules:\n  - name: only\n    match: {{path: /x/*}}\n    require: any\n"))
    assert pd.match_rule(p, "/y/z.sif", pd.JobContext()) is DEFAULT_RULE
    assert DEFAULT_RULE.require == "signed" and DEFAULT_RULE.action == "enforce"


def test_signer_patterns(tmp_path, pol):
    c = SiteChain(tmp_path, cn="builder", email="builder@hpc.example.org")
    who = identity(c.leaf)
    from sifguard.x509.chain import fingerprint
    rule = pol.rules[1]
    p_email, p_subj, p_fp, p_iss = rule.signers
    assert pd.signer_matches(p_email, who, ())
    assert pd.signer_matches(p_subj, identity(c.leaf).__class__(**{**who.__dict__, "subject": "CN=builder,O=X"}), ())
    assert not pd.signer_matches(p_subj, who, ())          # subject is exactly CN=builder here
    assert not pd.signer_matches(p_fp, who, ())
    assert pd.signer_matches(p_iss, who, ())
    from sifguard.policy.model import SignerPattern
    assert pd.signer_matches(SignerPattern(fingerprint=fingerprint(c.leaf)), who, ())
    assert pd.signer_matches(SignerPattern(issuer="sha256:" + fingerprint(c.inter)), who, (fingerprint(c.inter),))
    assert not pd.signer_matches(SignerPattern(issuer="sha256:" + "00" * 32), who, (fingerprint(c.inter),))
    assert not pd.signer_matches(SignerPattern(email="*@other.org"), who, ())
    assert pd.signer_matches(SignerPattern(email="BUILDER@HPC.example.org"), who, ())   # e-mail is case-insensitive
    assert not pd.signer_matches(SignerPattern(email="builder@hpc.example.org", subject="CN=x"), who, ())  # all fields


def test_example_policy_in_config_is_valid():
    p = load(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config", "policy.example.yaml"))
    assert [r.name for r in p.rules] == ["scratch-trial", "site-builders", "training-partition", "default"]
    assert p.revocation.mode == "enforce" and p.rules[2].revocation_mode == "soft-fail"


def test_compiled_snapshot_roundtrip_and_staleness(tmp_path, root):
    from sifguard.policy.loader import COMPILED_SUFFIX, load_fast
    p = write(tmp_path, FULL.format(root=root, fp="ab" * 32))
    first = load_fast(p)                                 # parses YAML, writes the snapshot
    assert os.path.exists(p + COMPILED_SUFFIX)
    assert load_fast(p) == first == load(p)              # served from the snapshot, identical
    text = open(p).read().replace("mode: soft-fail", "mode: off")
    open(p, "w").write(text)
    assert load_fast(p).revocation.mode == "off"         # any edit makes the snapshot stale
    os.chmod(p + COMPILED_SUFFIX, 0o666)                 # a snapshot others could write is ignored
    open(p + COMPILED_SUFFIX, "w").write('{"compiled_version": 1, "source": [], "policy": {}}')
    assert load_fast(p).revocation.mode == "off"
