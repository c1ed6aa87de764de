"""Verification levels, N-of-M signer quorums and TSA roots on the policy side: the pure
level → actions map, the YAML loader (file:line errors for every misuse), the compiled
snapshot, the policy fingerprint and `policy check`, and quorum.satisfy (maximum bipartite
matching over distinct keys) against a brute force."""
import dataclasses
import hashlib
import itertools
import json
import os
import re
import shutil
import textwrap

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings, strategies as st

from pki import SiteChain, cert, new_key
from sifguard.policy import decide as pd
from sifguard.policy import levels, quorum
from sifguard.policy import model as m
from sifguard.policy.loader import COMPILED_SUFFIX, PolicyError, load, load_fast
from sifguard.store import keys
from sifguard.x509.chain import SignerIdentity, identity

from test_policy import root, write  # noqa: F401 - the same policy-file helper and root fixture



def acts(i, a, e, r):
    return dict(zip(m.CHECKS, (i, a, e, r)))


E, L, S = "enforce", "log", "skip"


# --- levels × overrides → actions ------------------------------------------------------------
LEVEL_TABLE = [
    # level, overrides, integrity, authenticity, expiry, revocation
    ("strict", (), E, E, E, E),
    ("permissive", (), E, E, L, L),
    ("audit", (), E, L, L, L),
    ("skip", (), S, S, S, S),
    ("strict", (("revocation", "log"),), E, E, E, L),
    ("strict", (("revocation", "log"), ("expiry", "skip")), E, E, S, L),
    ("strict", (("authenticity", "log"),), E, L, E, E),
    ("permissive", (("expiry", "enforce"),), E, E, E, L),
    ("permissive", (("revocation", "skip"), ("authenticity", "log")), E, L, L, S),
    ("audit", (("authenticity", "enforce"),), E, E, L, L),
    ("audit", (("authenticity", "enforce"), ("expiry", "enforce"), ("revocation", "enforce")), E, E, E, E),
    ("audit", (("revocation", "skip"),), E, L, L, S),
    ("strict", (("authenticity", "skip"), ("expiry", "skip"), ("revocation", "skip")), E, S, S, S),
]


@pytest.mark.parametrize("level,overrides,i,a,e,r", LEVEL_TABLE,
                         ids=[f"{t[0]}-{'-'.join(c + ':' + x for c, x in t[1]) or 'plain'}" for t in LEVEL_TABLE])
def test_level_and_overrides_to_actions(level, overrides, i, a, e, r):
    got = levels.actions(m.Verification(level=level, overrides=overrides))
    assert got == acts(i, a, e, r) and list(got) == list(m.CHECKS)


def test_timestamp_does_not_change_actions_and_results_are_fresh():
    for ts in m.TIMESTAMP:
        assert levels.actions(m.Verification(timestamp=ts)) == dict.fromkeys(m.CHECKS, E)
    a = levels.actions(m.Verification())
    a["integrity"] = "skip"                                  # a caller's mutation leaks nowhere
    assert levels.actions(m.Verification())["integrity"] == E


@pytest.mark.parametrize("ver,want", [
    (m.Verification(level="lenient"), acts(E, E, E, E)),                        # unknown level: strict
    (m.Verification(overrides=(("integrity", "skip"),)), acts(E, E, E, E)),     # integrity never overridden
    (m.Verification(level="audit", overrides=(("integrity", "log"),)), acts(E, L, L, L)),
    (m.Verification(overrides=(("expiry", "ignore"),)), acts(E, E, E, E)),      # unknown action enforces
    (m.Verification(level="permissive", overrides=(("expiry", "maybe"),)), acts(E, E, E, L)),
    (m.Verification(overrides=(("revokation", "skip"),)), acts(E, E, E, E)),    # unknown check ignored
    (m.Verification(level="skip", overrides=(("authenticity", "enforce"),)), acts(S, S, S, S)),
])
def test_hand_built_verifications_are_read_fail_closed(ver, want):
    assert levels.actions(ver) == want


def test_describe_marks_overrides():
    d = levels.describe(m.Verification("permissive", (("revocation", "skip"),), "required"))
    assert d == "permissive (integrity enforce, authenticity enforce, expiry log, revocation skip*), " \
                "timestamp required"


# --- the YAML ---------------------------------------------------------------------------------
SETS = """\
signers:
  builders:
    - {subject: "CN=builder*"}
    - {email: "*@build.example.org"}
  security-team:
    - {email: "*@sec.example.org"}
"""
BODY_LINE = 11     # the first line of a rule body in qpolicy()


def qpolicy(root, body: str, sets: str = SETS, trust: str = "", more_rules: str = "") -> str:
    """A policy with two signer sets (lines 3-8) and one rule 'r' whose body starts on line 11;
    `more_rules`: further rules, as YAML list items indented by two."""
    body = textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
    return f"version: 1\ntrust: {{roots: [{root}]{trust}}}\n{sets}rules:\n  - name: r\n{body}\n{more_rules}"


ACCEPT = [
    # rule body, expected (require, quorum, verification, number of inline signer patterns)
    ("action: enforce", ("signed", None, m.Verification(), 0)),
    ("verification: permissive", ("signed", None, m.Verification("permissive"), 0)),
    ("verification: {level: audit}", ("signed", None, m.Verification("audit"), 0)),
    ("verification: {timestamp: required}", ("signed", None, m.Verification(timestamp="required"), 0)),
    ("verification: {level: skip}", ("signed", None, m.Verification("skip"), 0)),
    ("verification:\n  level: audit\n  override: {revocation: enforce, authenticity: enforce}\n"
     "  timestamp: required",
     ("signed", None, m.Verification("audit", (("revocation", E), ("authenticity", E)), "required"), 0)),
    ("verification: {override: {expiry: skip}}", ("signed", None, m.Verification(overrides=(("expiry", S),)), 0)),
    ("require: {count: 2, signers: [builders, security-team]}",
     ("signed", m.Quorum(2, ("builders", "security-team")), m.Verification(), 0)),
    ("require: {count: 2, signers: [builders, builders]}",
     ("signed", m.Quorum(2, ("builders", "builders")), m.Verification(), 0)),
    ("require: {count: 1, signers: builders}", ("signed", m.Quorum(1, ("builders",)), m.Verification(), 0)),
    ("require:\n  signers: [security-team, builders, builders]\n  count: 3\n",
     ("signed", m.Quorum(3, ("security-team", "builders", "builders")), m.Verification(), 0)),
    ("require: {count: 2, signers: [builders, security-team]}\nsigners: [{issuer: 'CN=Site Issuing CA'}]\n"
     "verification: {level: permissive, timestamp: required}",
     ("signed", m.Quorum(2, ("builders", "security-team")), m.Verification("permissive", (), "required"), 1)),
    ("signers: [{email: '*@x.org'}]\nverification: {override: {authenticity: log}}",
     ("signed", None, m.Verification(overrides=(("authenticity", L),)), 1)),
    ("require: any", ("any", None, m.Verification(), 0)),
    ("revocation: off\nverification: {override: {revocation: skip}}",
     ("signed", None, m.Verification(overrides=(("revocation", S),)), 0)),
    ("require: signed\nverification: strict", ("signed", None, m.Verification(), 0)),
]


@pytest.mark.parametrize("body,want", ACCEPT, ids=[a[0].replace("\n", " ")[:50] for a in ACCEPT])
def test_loader_accepts(tmp_path, root, body, want):
    p = load(write(tmp_path, qpolicy(root, body)))
    r = p.rules[0]
    assert (r.require, r.quorum, r.verification, len(r.signers)) == want
    assert p.signer_set("builders")[1].email == "*@build.example.org" and p.signer_set("nobody") is None
    assert [n for n, _ in p.signer_sets] == ["builders", "security-team"]


def _slots(n):
    return "[" + ", ".join(["builders"] * n) + "]"


REJECT_RULE = [
    # rule body, line offset from BODY_LINE, message part, did-you-mean (or None)
    ("require: {count: 0, signers: [builders]}", 0, "require.count must be between 1 and 16", None),
    ("require: {count: -1, signers: [builders]}", 0, "require.count must be between 1 and 16", None),
    ("require: {count: two, signers: [builders]}", 0, "require.count must be a whole number", None),
    ("require: {count: 1.5, signers: [builders]}", 0, "require.count must be a whole number", None),
    ("require: {count: 3, signers: [builders, security-team]}", 0, "more than the 2 signer set slot(s)", None),
    ("require: {count: 1, signers: [bilders]}", 0, "unknown signer set 'bilders'", "did you mean 'builders'"),
    ("require:\n  count: 1\n  signers:\n    - builders\n    - securty-team\n", 4,
     "unknown signer set 'securty-team'", "did you mean 'security-team'"),
    ("require: {count: 1, signers: []}", 0, "a quorum needs at least one signer set", None),
    ("require: {count: 1, signers: ~}", 0, "not null", None),
    ("require: {count: 1, signers: [{email: x}]}", 0, "must be a single value", None),
    ("require: {count: 1, signers: [builders], any: 1}", 0, "unknown key 'any' in rule 'r' require", None),
    ("require: {cuont: 1, signers: [builders]}", 0, "unknown key 'cuont'", "did you mean 'count'"),
    ("require:\n  signers: [builders]\n", 0, "require needs 'count'", None),
    ("require: {count: 1}", 0, "require needs 'signers'", None),
    ("require: {}", 0, "require needs 'signers'", None),
    (f"require: {{count: 1, signers: {_slots(17)}}}", 0, "names 17 slots, at most 16", None),
    ("require: strong", 0, "require must be one of signed, any", None),
    ("require: any\nverification: {level: audit}", 1, "'require: any' with 'verification' is contradictory", None),
    ("verification: {level: audit}\nrequire: any", 0, "'require: any' with 'verification'", None),
    ("require: {count: 1, signers: [builders]}\nverification: {level: skip}", 1,
     "verification level skip with signers or a quorum is contradictory", None),
    ("signers: [{email: x}]\nverification:\n  level: skip\n", 2, "level skip with signers or a quorum", None),
    ("signers: [{email: x}]\nverification: skip", 1, "level skip with signers or a quorum", None),
    ("verification: {level: skip, override: {expiry: log}}", 0, "level skip takes no override", None),
    ("verification:\n  level: skip\n  override:\n    expiry: log\n", 2, "level skip takes no override", None),
    ("verification: {level: skip, timestamp: required}", 0, "skip with 'timestamp: required'", None),
    ("verification: {override: {integrity: log}}", 0, "integrity cannot be overridden", None),
    ("verification:\n  level: audit\n  override:\n    expiry: log\n    integrity: skip\n", 4,
     "integrity cannot be overridden", None),
    ("verification:\n  override:\n    revokation: log\n", 2, "unknown key 'revokation'", "did you mean 'revocation'"),
    ("verification: {override: {expiry: ignore}}", 0, "override.expiry must be one of enforce, log, skip", None),
    ("verification: {override: {expiry: log, expiry: skip}}", 0, "duplicate key 'expiry'", None),
    ("verification: {override: {}}", 0, "verification.override is empty", None),
    ("verification: {override: [expiry]}", 0, "verification.override must be a mapping", None),
    ("verification: {level: lenient}", 0, "verification.level must be one of strict, permissive, audit, skip",
     None),
    ("verification: lenient", 0, "verification.level must be one of", None),
    ("verification: [strict]", 0, "verification.level must be a single value", None),
    ("verification: {timestamp: always}", 0, "verification.timestamp must be one of optional, required", None),
    ("verification: {levle: audit}", 0, "unknown key 'levle'", "did you mean 'level'"),
    ("verifcation: {level: audit}", 0, "unknown key 'verifcation'", "did you mean 'verification'"),
    ("signers: [{email: x}]\nverification: {override: {authenticity: skip}}", 1,
     "'authenticity: skip' with signers or a quorum is contradictory", None),
    ("require: {count: 1, signers: [builders]}\nverification:\n  override:\n    authenticity: skip\n", 3,
     "'authenticity: skip' with signers", None),
    ("revocation: off\nverification: {override: {revocation: enforce}}", 1,
     "'revocation: off' with a revocation override 'enforce' is contradictory", None),
    ("revocation: {mode: off}\nverification:\n  override: {revocation: log}\n", 1,
     "'revocation: off' with a revocation override 'log'", None),
    ("signers: [builders]", 0, "'builders' in rule 'r' signers is a signer set", None),
    ("signers:\n  - {email: x}\n  - security-team\n", 2, "'security-team' in rule 'r' signers is a signer set", None),
]


@pytest.mark.parametrize("body,dl,msg,hint", REJECT_RULE, ids=[r[0].replace("\n", " ")[:50] for r in REJECT_RULE])
def test_loader_rejects_rule(tmp_path, root, body, dl, msg, hint):
    p = write(tmp_path, qpolicy(root, body))
    with pytest.raises(PolicyError) as e:
        load(p)
    s = str(e.value)
    assert s.startswith(f"{p}:{BODY_LINE + dl}: ") and msg in s, s
    assert hint is None or hint in s, s
    assert "\n" not in s


REJECT_TOP = [
    # (signers section, extra trust keys, rule body) → line, message part
    (("signers: {}\n", "", "action: enforce"), 3, "signers is empty"),
    (("signers: [builders]\n", "", "action: enforce"), 3, "signers (named signer sets) must be a mapping"),
    (("signers:\n  builders: []\n", "", "action: enforce"), 4, "signer set 'builders' must be a non-empty list"),
    (("signers:\n  builders: ~\n", "", "action: enforce"), 4, "signer set 'builders' must be a non-empty list"),
    (("signers:\n  builders: {email: x}\n", "", "action: enforce"), 4, "must be a non-empty list"),
    (("signers:\n  builders:\n    - {}\n", "", "action: enforce"), 5, "would match anyone"),
    (("signers:\n  builders:\n    - {emial: x}\n", "", "action: enforce"), 5, "did you mean 'email'"),
    (("signers:\n  builders:\n    - {fingerprint: abc}\n", "", "action: enforce"), 5,
     "signer set 'builders' signer fingerprint must be sha256:<64 hex digits>"),
    (("signers:\n  builders:\n    - {subject: 'CN=[z-a]'}\n", "", "action: enforce"), 5, "invalid glob"),
    (("signers:\n  'bad name':\n    - {email: x}\n", "", "action: enforce"), 4, "'bad name' is not a plain name"),
    (("signers:\n  -x:\n    - {email: x}\n", "", "action: enforce"), 4, "'-x' is not a plain name"),
    (("signers:\n  ~:\n    - {email: x}\n", "", "action: enforce"), 4, "is not a plain name"),
    (("signers:\n  " + "a" * 65 + ":\n    - {email: x}\n", "", "action: enforce"), 4, "not a plain name"),
    (("signers:\n  [a]:\n    - {email: x}\n", "", "action: enforce"), 4, "must be a single value"),
    (("signers:\n  b:\n    - {email: x}\n  b:\n    - {email: y}\n", "", "action: enforce"), 6,
     "duplicate key 'b'"),
    (("signrs:\n  b:\n    - {email: x}\n", "", "action: enforce"), 3, "did you mean 'signers'"),
    (("", "", "require: {count: 1, signers: [builders]}"), 5, "the policy defines none"),
    (("", ", tsa_roots: []", "action: enforce"), 2, "trust.tsa_roots is an empty list"),
    (("", ", tsa_roots: ['']", "action: enforce"), 2, "trust.tsa_roots must be a non-empty string"),
    (("", ", tsa_roots: ~", "action: enforce"), 2, "trust.tsa_roots must be a non-empty string, not null"),
    (("", ", tsa_root: [x.pem]", "action: enforce"), 2, "did you mean 'tsa_roots'"),
]


@pytest.mark.parametrize("parts,line,msg", REJECT_TOP, ids=[r[2][:40] + f"-{i}" for i, r in enumerate(REJECT_TOP)])
def test_loader_rejects_sets_and_tsa_roots(tmp_path, root, parts, line, msg):
    sets, trust, body = parts
    p = write(tmp_path, qpolicy(root, body, sets=sets, trust=trust))
    with pytest.raises(PolicyError) as e:
        load(p)
    s = str(e.value)
    assert s.startswith(f"{p}:{line}: ") and msg in s, s


@pytest.mark.parametrize("body,dl", [("require: {count: 3, signers: [builders, builders]}", 0),
                                     ("verification:\n  override:\n    integrity: log\n", 2)])
def test_policy_check_cli_one_line_exit_2(tmp_path, cli, root, body, dl):
    p = write(tmp_path, qpolicy(root, body))
    r = cli("policy", "check", p)
    assert r.rc == 2 and r.err.count("\n") == 1 and f"{p}:{BODY_LINE + dl}:" in r.err, r


def test_tsa_roots_are_made_absolute_like_roots(tmp_path, root):
    p = load(write(tmp_path, qpolicy(root, "action: enforce", trust=", tsa_roots: [tsa.pem, /etc/tsa]")))
    assert p.tsa_roots == (str(tmp_path / "tsa.pem"), "/etc/tsa")
    p = load(write(tmp_path, qpolicy(root, "action: enforce", trust=", tsa_roots: tsa-dir")))
    assert p.tsa_roots == (str(tmp_path / "tsa-dir"),)
    assert load(write(tmp_path, qpolicy(root, "action: enforce"))).tsa_roots == ()


def test_defaults_keep_existing_policies_meaning(tmp_path, root):
    from test_policy import FULL
    p = load(write(tmp_path, FULL.format(root=root, fp="ab" * 32)))
    assert p.tsa_roots == () and p.signer_sets == ()
    assert all(r.verification == m.Verification() and r.quorum is None for r in p.rules)
    assert levels.actions(m.DEFAULT_RULE.verification) == dict.fromkeys(m.CHECKS, E)
    assert m.DEFAULT_RULE.quorum is None


# --- the compiled snapshot -------------------------------------------------------------------
def full_new(root, tsa):
    return qpolicy(root, """\
        match: {path: "/apps/**"}
        require: {count: 2, signers: [builders, security-team, builders]}
        signers: [{issuer: "CN=Site Issuing CA"}]
        verification:
          level: permissive
          override: {revocation: skip, authenticity: enforce}
          timestamp: required
        """, trust=f", tsa_roots: [{tsa}]", more_rules=(
        "  - name: audited\n    match: {path: '/scratch/**'}\n    verification: audit\n"
        "  - name: free\n    match: {path: '/tmp/**'}\n    require: any\n"))


def test_snapshot_round_trips_every_new_field(tmp_path, root):
    tsa = SiteChain(tmp_path, cn="tsa").root_pem
    p = write(tmp_path, full_new(root, tsa))
    want = load(p)
    assert want.rules[0].quorum == m.Quorum(2, ("builders", "security-team", "builders"))
    assert want.rules[0].verification == m.Verification("permissive", (("revocation", S), ("authenticity", E)),
                                                        "required")
    assert want.tsa_roots == (tsa,) and len(want.signer_sets) == 2
    first = load_fast(p)                                   # parses, writes the snapshot
    assert os.path.exists(p + COMPILED_SUFFIX)
    second = load_fast(p)                                  # from the snapshot
    third = load_fast(p)
    assert first == second == third == want
    assert isinstance(second.rules[0].verification.overrides[0], tuple)
    assert isinstance(second.signer_sets[0][1][0], m.SignerPattern)
    assert hash(second.rules[0].verification) == hash(want.rules[0].verification)
    assert keys.policy_fingerprint(second) == keys.policy_fingerprint(want)


def test_an_older_snapshot_version_is_reparsed(tmp_path, root):
    p = write(tmp_path, qpolicy(root, "require: {count: 1, signers: [builders]}"))
    load_fast(p)
    snap = p + COMPILED_SUFFIX
    d = json.load(open(snap))
    d["compiled_version"] = 3
    for k in ("tsa_roots", "signer_sets"):
        del d["policy"][k]
    for r in d["policy"]["rules"]:
        del r["verification"], r["quorum"]
    json.dump(d, open(snap, "w"))
    assert load_fast(p).rules[0].quorum == m.Quorum(1, ("builders",))


def _set(key, value):
    def mutate(d):
        target = d
        *path, last = key
        for k in path:
            target = target[k]
        target[last] = value
    return mutate


SMUGGLE = [
    ("override-integrity", _set(("rules", 0, "verification", "overrides"), [["integrity", "skip"]])),
    ("override-unknown-check", _set(("rules", 0, "verification", "overrides"), [["revokation", "skip"]])),
    ("override-bad-action", _set(("rules", 0, "verification", "overrides"), [["expiry", "ignore"]])),
    ("override-triple", _set(("rules", 0, "verification", "overrides"), [["expiry", "log", "x"]])),
    ("override-string", _set(("rules", 0, "verification", "overrides"), ["ex"])),
    ("override-duplicate", _set(("rules", 0, "verification", "overrides"), [["expiry", "log"], ["expiry", "skip"]])),
    ("bad-level", _set(("rules", 0, "verification", "level"), "lenient")),
    ("bad-timestamp", _set(("rules", 0, "verification", "timestamp"), "always")),
    ("skip-with-quorum", _set(("rules", 0, "verification", "level"), "skip")),
    ("authenticity-skip-with-quorum", _set(("rules", 0, "verification", "overrides"), [["authenticity", "skip"]])),
    ("extra-verification-key", _set(("rules", 0, "verification", "strength"), 3)),
    ("count-zero", _set(("rules", 0, "quorum", "count"), 0)),
    ("count-too-big", _set(("rules", 0, "quorum", "count"), 3)),
    ("count-bool", _set(("rules", 0, "quorum", "count"), True)),
    ("count-float", _set(("rules", 0, "quorum", "count"), 1.0)),
    ("count-string", _set(("rules", 0, "quorum", "count"), "1")),
    ("unknown-slot", _set(("rules", 0, "quorum", "slots"), ["builders", "nobody"])),
    ("slots-string", _set(("rules", 0, "quorum", "slots"), "builders")),
    ("seventeen-slots", _set(("rules", 0, "quorum", "slots"), ["builders"] * 17)),
    ("quorum-not-mapping", _set(("rules", 0, "quorum"), [1, ["builders"]])),
    ("quorum-with-any", _set(("rules", 0, "require"), "any")),
    ("revocation-off-with-override", lambda d: (_set(("rules", 0, "revocation_mode"), "off")(d), _set(
        ("rules", 0, "verification", "overrides"), [["revocation", "log"]])(d))),
    ("empty-set", _set(("signer_sets", 0, 1), [])),
    ("bad-set-name", _set(("signer_sets", 0, 0), "bad name")),
    ("duplicate-set-name", _set(("signer_sets", 1, 0), "builders")),
    ("set-not-pair", _set(("signer_sets", 0), ["builders"])),
    ("empty-set-pattern", _set(("signer_sets", 0, 1), [{"subject": None, "email": None, "fingerprint": None,
                                                        "issuer": None, "line": 1}])),
    ("bad-set-glob", _set(("signer_sets", 0, 1), [{"subject": "CN=[z-a]", "email": None, "fingerprint": None,
                                                   "issuer": None, "line": 1}])),
    ("tsa-roots-empty-string", _set(("tsa_roots",), [""])),
    ("tsa-roots-string", _set(("tsa_roots",), "/etc/tsa.pem")),
    ("tsa-roots-null", _set(("tsa_roots",), [None])),
]


@pytest.mark.parametrize("mutate", [s[1] for s in SMUGGLE], ids=[s[0] for s in SMUGGLE])
def test_snapshot_cannot_smuggle_new_fields(tmp_path, root, mutate):
    p = write(tmp_path, qpolicy(root, "require: {count: 2, signers: [builders, security-team]}\n"
                                      "verification: {level: permissive}", trust=", tsa_roots: [t.pem]"))
    good = load(p)
    load_fast(p)
    snap = p + COMPILED_SUFFIX
    d = json.load(open(snap))
    mutate(d["policy"])
    with open(snap, "w") as f:
        json.dump(d, f)
    os.chmod(snap, 0o644)
    assert load_fast(p) == good                           # the snapshot was refused, the YAML re-read
    rewritten = json.load(open(snap))["policy"]           # ... and a valid one written in its place
    assert rewritten == json.loads(json.dumps(dataclasses.asdict(good)))


def test_check_model_refuses_require_any_with_a_level(tmp_path, root):
    from sifguard.policy.loader import SnapshotError, check_model
    pol = load(write(tmp_path, qpolicy(root, "require: any")))
    check_model(pol)
    bad = dataclasses.replace(pol, rules=(dataclasses.replace(pol.rules[0], verification=m.Verification("audit")),))
    with pytest.raises(SnapshotError, match="require any"):
        check_model(bad)


# --- the policy fingerprint ------------------------------------------------------------------
def test_fingerprint_hashes_tsa_root_contents_not_paths(tmp_path, root):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    tsa = SiteChain(a, cn="tsa")
    shutil.copyfile(tsa.root_pem, b / "tsa-root.pem")
    pol = load(write(tmp_path, qpolicy(root, "action: enforce", trust=f", tsa_roots: [{tsa.root_pem}]")))
    fp = keys.policy_fingerprint(pol)
    moved = dataclasses.replace(pol, tsa_roots=(str(b / "tsa-root.pem"),))
    assert keys.policy_fingerprint(moved) == fp                        # the same bytes elsewhere
    as_dir = dataclasses.replace(pol, tsa_roots=(str(b),))
    assert keys.policy_fingerprint(as_dir) == fp                       # a directory holding them
    assert keys.policy_fingerprint(dataclasses.replace(pol, tsa_roots=())) != fp
    other = SiteChain(tmp_path, cn="other-tsa")
    assert keys.policy_fingerprint(dataclasses.replace(pol, tsa_roots=(other.root_pem,))) != fp
    with open(tsa.root_pem, "ab") as f:                               # the file itself changes
        f.write(open(other.root_pem, "rb").read())
    assert keys.policy_fingerprint(pol) != fp
    # a TSA root is not a site root: the same file as a root or as a TSA root differs
    swapped = dataclasses.replace(pol, roots=pol.tsa_roots, tsa_roots=pol.roots)
    assert keys.policy_fingerprint(swapped) != keys.policy_fingerprint(pol)


def test_fingerprint_follows_levels_quorum_and_sets(tmp_path, root):
    pol = load(write(tmp_path, qpolicy(root, "require: {count: 1, signers: [builders, security-team]}")))
    fp = keys.policy_fingerprint(pol)
    r = pol.rules[0]
    variants = [
        dataclasses.replace(pol, rules=(dataclasses.replace(r, verification=m.Verification("permissive")),)),
        dataclasses.replace(pol, rules=(dataclasses.replace(r, verification=m.Verification(timestamp="required")),)),
        dataclasses.replace(pol, rules=(dataclasses.replace(
            r, verification=m.Verification(overrides=(("expiry", "log"),))),)),
        dataclasses.replace(pol, rules=(dataclasses.replace(r, quorum=m.Quorum(2, r.quorum.slots)),)),
        dataclasses.replace(pol, rules=(dataclasses.replace(r, quorum=m.Quorum(1, ("builders",))),)),
        dataclasses.replace(pol, rules=(dataclasses.replace(r, quorum=None),)),
        dataclasses.replace(pol, signer_sets=(pol.signer_sets[0], ("security-team", (m.SignerPattern(email="*"),)))),
    ]
    fps = {keys.policy_fingerprint(v) for v in variants}
    assert fp not in fps and len(fps) == len(variants)
    relined = dataclasses.replace(pol, signer_sets=tuple(
        (n, tuple(dataclasses.replace(p, line=p.line + 7) for p in pats)) for n, pats in pol.signer_sets))
    assert keys.policy_fingerprint(relined) == fp                      # source lines never count


# --- policy check ------------------------------------------------------------------------------
def test_policy_check_prints_actions_timestamp_quorum_and_tsa_roots(tmp_path, cli, root):
    tsa = SiteChain(tmp_path, cn="tsa").root_pem
    p = write(tmp_path, qpolicy(root, """\
        match: {path: "/apps/**"}
        require: {count: 2, signers: [builders, builders]}
        signers: [{issuer: "CN=Site Issuing CA"}]
        verification:
          override: {revocation: log, expiry: skip}
          timestamp: required
        """, trust=f", tsa_roots: [{tsa}]", more_rules="  - name: free\n    require: any\n"))
    r = cli("policy", "check", p)
    assert r.rc == 0, r
    out = r.out
    assert f"TSA roots: 1 certificate(s) from {tsa}" in out and "CN=Site Root" in out
    assert "signer sets: builders (2 pattern(s)), security-team (1 pattern(s))" in out
    assert "require 2 of [builders, builders] (distinct signers), signers: 1 pattern(s) (every quorum signer " \
           "must match one)" in out
    assert "verification strict (integrity enforce, authenticity enforce, expiry skip*, revocation log*), " \
           "timestamp required" in out
    assert "2. free (line 17): everything -> enforce, require any\n" in out     # nothing is verified: no level
    assert "(* an action the rule's verification.override sets)" in out
    assert re.search(r"default \(built-in\).*\n\s+verification strict \(integrity enforce, authenticity enforce, "
                     r"expiry enforce, revocation enforce\), timestamp optional", out)
    assert "signer set 'security-team' is used by no rule" in r.err


def test_policy_check_without_tsa_roots_and_with_a_missing_one(tmp_path, cli, root):
    r = cli("policy", "check", write(tmp_path, qpolicy(root, "require: {count: 1, signers: [builders, "
                                                             "security-team]}")))
    assert r.rc == 0 and "TSA roots: the trust roots (trust.tsa_roots not set)" in r.out and "warning" not in r.err
    r = cli("policy", "check", write(tmp_path, qpolicy(root, "action: enforce",
                                                       trust=f", tsa_roots: [{tmp_path}/missing-tsa.pem]")))
    assert r.rc == 2 and "missing-tsa.pem" in r.err and r.err.count("\n") == 1


# --- the example policy ----------------------------------------------------------------------
EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config", "policy.example.yaml")


def uncomment_examples(text: str) -> str:
    """Enable every '# example:' paragraph of the file: from its first line that is YAML once
    uncommented, remove the '# ' of each line up to the paragraph's end (a blank line)."""
    out, state = [], None             # None | "header" | "yaml"
    for line in text.split("\n"):
        if not line.strip():
            state = None
        elif re.match(r"\s*# example:", line):
            state = "header"
        elif state is not None:
            bare = re.sub(r"^(\s*)# ?", r"\1", line, count=1)
            if state == "yaml" or re.match(r"\s*([\w-]+:|- )", bare):
                state, line = "yaml", bare
        out.append(line)
    return "\n".join(out)


def test_example_policy_keeps_its_meaning_and_its_examples_load(tmp_path):
    plain = load(EXAMPLE)
    assert plain.tsa_roots == () and plain.signer_sets == ()
    assert all(r.verification == m.Verification() and r.quorum is None for r in plain.rules)
    text = open(EXAMPLE).read()
    enabled = uncomment_examples(text)
    assert enabled != text
    p = load(write(tmp_path, enabled, "example.yaml"))
    assert p.tsa_roots == ("/etc/sifguard/roots/tsa-root.pem",)
    assert [n for n, _ in p.signer_sets] == ["builders", "security-team"]
    assert [r.name for r in p.rules] == ["prod-apps", "legacy-apps"] + [r.name for r in plain.rules]
    prod = p.rules[0]
    assert prod.quorum == m.Quorum(2, ("builders", "builders", "security-team"))
    assert prod.verification == m.Verification("strict", (), "required")
    legacy = p.rules[1]
    assert legacy.verification == m.Verification("permissive", (("revocation", "enforce"),), "optional")
    assert [dataclasses.replace(r, line=0) for r in p.rules[2:]] == [dataclasses.replace(r, line=0)
                                                                    for r in plain.rules]


# --- quorum.satisfy ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Sig:
    """A signer as the decision core holds it: identity, issuer fingerprints, key digest."""

    who: SignerIdentity
    key: str
    issuers: tuple[str, ...] = ()


def sig(subject, key, email=None):
    return Sig(SignerIdentity(subject=subject, emails=(email,) if email else (), serial="1",
                              issuer="CN=Site Issuing CA", fingerprint=hashlib.sha256(subject.encode()).hexdigest(),
                              not_after="2030-01-01T00:00:00Z"), key)


def matches(p, s):
    return pd.signer_matches(p, s.who, s.issuers)


def by_key(s):
    return s.key


BUILDERS = (m.SignerPattern(subject="CN=builder*"), m.SignerPattern(email="*@build.example.org"))
SEC = (m.SignerPattern(email="*@sec.example.org"),)
SETS_PY = {"builders": BUILDERS, "sec": SEC, "none": ()}

b1 = sig("CN=builder1", "k1")
b1_renewed = sig("CN=builder1-renewed", "k1")                 # a second certificate for k1
b2 = sig("CN=ci", "k2", "ci@build.example.org")
s1 = sig("CN=alice", "k3", "alice@sec.example.org")
both = sig("CN=builder3", "k4", "bob@sec.example.org")        # in both sets
k1_sec = sig("CN=carol", "k1", "carol@sec.example.org")       # k1 again, certified as security
x1 = sig("CN=mallory", "k5", "mallory@evil.example.org")
x2 = sig("CN=eve", "k6", "eve@build.example.org.evil")

QUORUM = [
    # id, slots, signers, count, holds, assignment
    ("one-of-each", ["builders", "sec"], [b1, s1], 2, True, [(0, 0), (1, 1)]),
    ("one-signer-two-sets", ["builders", "sec"], [both], 2, False, [(0, 0)]),
    ("one-signer-two-sets-count-1", ["builders", "sec"], [both], 1, True, [(0, 0)]),
    ("both-then-builder", ["builders", "sec"], [both, b1], 2, True, [(0, 1), (1, 0)]),
    ("builder-then-both", ["builders", "sec"], [b1, both], 2, True, [(0, 0), (1, 1)]),
    ("two-certs-one-key", ["builders", "builders"], [b1, b1_renewed], 2, False, [(0, 0)]),
    ("two-distinct-builders", ["builders", "builders"], [b1, b2], 2, True, [(0, 0), (1, 1)]),
    ("dup-key-then-distinct", ["builders", "builders"], [b1, b1_renewed, b2], 2, True, [(0, 0), (1, 2)]),
    ("one-key-two-identities", ["sec", "builders"], [b1, k1_sec], 2, False, [(0, 1)]),
    ("one-key-two-identities+sec", ["sec", "builders"], [b1, k1_sec, s1], 2, True, [(0, 2), (1, 0)]),
    ("unrelated-signers", ["builders", "sec"], [x1, x2], 1, False, []),
    ("unrelated-and-one", ["builders", "sec"], [x1, b1, x2], 2, False, [(0, 1)]),
    ("count-beyond-slots", ["builders"], [b1, b2], 2, False, [(0, 0)]),
    ("count-zero-never", ["builders"], [b1], 0, False, []),
    ("no-signers", ["builders", "sec"], [], 1, False, []),
    ("no-slots", [], [b1], 1, False, []),
    ("empty-set-slot", ["none", "builders"], [b1, b2], 2, False, [(1, 0)]),
    ("prefers-earlier", ["builders"], [b2, b1], 1, True, [(0, 0)]),
    ("more-than-count", ["builders", "builders", "sec"], [b1, b2, s1], 2, True, [(0, 0), (1, 1), (2, 2)]),
    ("three-slots-two-sets", ["builders", "builders", "sec"], [both, b1, b2], 3, True, [(0, 2), (1, 1), (2, 0)]),
]


@pytest.mark.parametrize("slots,signers,count,holds,assignment", [q[1:] for q in QUORUM], ids=[q[0] for q in QUORUM])
def test_quorum_table(slots, signers, count, holds, assignment):
    pats = [SETS_PY[s] for s in slots]
    got = quorum.satisfy(pats, signers, count, matches, key=by_key)
    assert got == (holds, assignment)
    assert quorum.satisfy(pats, list(signers), count, matches, key=by_key) == got      # deterministic


def test_quorum_bounds():
    many = [sig(f"CN=builder{i}", f"k{i}") for i in range(20)]
    assert quorum.satisfy([BUILDERS] * 16, many, 16, matches, key=by_key)[0] is True
    assert quorum.satisfy([BUILDERS] * 17, many, 1, matches, key=by_key) == (False, [])   # loader caps at 16
    nobody = [x1] * 64 + [b1]                        # the 65th signer is beyond the bound: ignored
    assert quorum.satisfy([BUILDERS], nobody, 1, matches, key=by_key) == (False, [])
    assert quorum.satisfy([BUILDERS], nobody[1:], 1, matches, key=by_key) == (True, [(0, 63)])


def test_quorum_key_is_required():
    with pytest.raises(TypeError):
        quorum.satisfy([BUILDERS], [b1], 1, matches)        # no default: a forgotten key cannot double-count


def test_slot_patterns_from_a_loaded_policy(tmp_path, root):
    pol = load(write(tmp_path, qpolicy(root, "require: {count: 2, signers: [security-team, builders, builders]}")))
    pats = quorum.slot_patterns(pol, pol.rules[0].quorum)
    assert [len(p) for p in pats] == [1, 2, 2] and pats[0][0].email == "*@sec.example.org"
    assert quorum.slot_patterns(pol, m.Quorum(1, ("gone",))) == [()]


def test_quorum_with_real_certificates_two_certs_of_one_key(tmp_path):
    """Distinctness by public key: two certificates for one key (a renewal) are one signer."""
    chain = SiteChain(tmp_path)
    k_a, k_b = new_key(), new_key()
    a1 = cert(k_a, "builder-a", chain.int_key, chain.inter)
    a2 = cert(k_a, "builder-a-2027", chain.int_key, chain.inter)
    b = cert(k_b, "builder-b", chain.int_key, chain.inter, email="b@build.example.org")

    def real(c):
        spki = c.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return Sig(identity(c, [c, chain.inter, chain.root]), hashlib.sha256(spki).hexdigest())

    slots = [BUILDERS, BUILDERS]
    assert quorum.satisfy(slots, [real(a1), real(a2)], 2, matches, key=by_key) == (False, [(0, 0)])
    assert quorum.satisfy(slots, [real(a1), real(a2), real(b)], 2, matches, key=by_key) == (True, [(0, 0), (1, 2)])
    by_cert = quorum.satisfy(slots, [real(a1), real(a2)], 2, matches, key=lambda s: s.who.fingerprint)
    assert by_cert[0] is True                         # what keying by certificate would wrongly allow


@dataclasses.dataclass(frozen=True)
class CoreSigner:
    """The shape of enforce.core.Signer that decide.quorum_met reads."""

    identity: SignerIdentity
    issuers: tuple[str, ...]
    key: str


def core(s: Sig, issuers=()) -> CoreSigner:
    return CoreSigner(s.who, issuers, s.key)


@pytest.mark.parametrize("inline,signers,holds,assignment", [
    # no inline signers: the quorum alone
    ("", [b1, x1, s1], True, [(0, 0), (1, 2)]),
    # inline signers filter who counts: only signers issued by the CA with fingerprint F
    ("signers: [{issuer: 'sha256:" + "ab" * 32 + "'}]", [b1, x1, s1], False, []),
    ("signers: [{email: '*@sec.example.org'}]", [b1, x1, s1, both], True, [(0, 3), (1, 2)]),
    ("signers: [{subject: 'CN=builder*'}]", [x1, b1, s1], False, [(0, 1)]),
])
def test_quorum_met_counts_only_signers_the_rule_allows(tmp_path, root, inline, signers, holds, assignment):
    pol = load(write(tmp_path, qpolicy(root, "require: {count: 2, signers: [builders, security-team]}\n" + inline)))
    got = pd.quorum_met(pol, pol.rules[0], [core(s) for s in signers], key=lambda s: s.key)
    assert got == (holds, assignment)          # indexes into the signers given, not the filtered list


def test_quorum_met_with_issuer_fingerprints_and_without_a_quorum(tmp_path, root):
    fp = "cd" * 32
    pol = load(write(tmp_path, qpolicy(root, f"require: {{count: 2, signers: [builders, builders]}}\n"
                                              f"signers: [{{issuer: 'sha256:{fp}'}}]",
                                       more_rules="  - name: plain\n    require: signed\n")))
    ours = [core(b1, (fp,)), core(b2, (fp,))]
    assert pd.quorum_met(pol, pol.rules[0], ours, key=lambda s: s.key) == (True, [(0, 0), (1, 1)])
    mixed = [core(b1, (fp,)), core(b2, ("ee" * 32,))]             # b2 chains to another issuing CA
    assert pd.quorum_met(pol, pol.rules[0], mixed, key=lambda s: s.key) == (False, [(0, 0)])
    assert pd.quorum_met(pol, pol.rules[1], [], key=lambda s: s.key) == (True, [])


def brute_force(edges, keys_, n_slots, n_signers) -> int:
    """The largest number of slots distinct keys can fill, over every assignment."""
    best = 0
    for choice in itertools.product([None, *range(n_signers)], repeat=n_slots):
        used = [c for c in choice if c is not None]
        if len({keys_[c] for c in used}) != len(used):
            continue
        if all(c is None or (s, c) in edges for s, c in enumerate(choice)):
            best = max(best, len(used))
    return best


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_satisfy_equals_brute_force(data):
    n_slots = data.draw(st.integers(0, 4))
    n_signers = data.draw(st.integers(0, 6))
    keys_ = data.draw(st.lists(st.integers(0, 3), min_size=n_signers, max_size=n_signers))
    edges = data.draw(st.sets(st.tuples(st.integers(0, max(n_slots - 1, 0)), st.integers(0, max(n_signers - 1, 0)))))
    edges = {(s, c) for s, c in edges if s < n_slots and c < n_signers}
    count = data.draw(st.integers(1, 5))
    slot_pats = [(s,) for s in range(n_slots)]           # a slot's one "pattern" is its index
    signers = list(range(n_signers))                     # a signer is its index
    holds, assignment = quorum.satisfy(slot_pats, signers, count, lambda p, c: (p, c) in edges,
                                       key=lambda c: keys_[c])
    best = brute_force(edges, keys_, n_slots, n_signers)
    assert len(assignment) == best and holds == (best >= count)
    assert [s for s, _ in assignment] == sorted({s for s, _ in assignment})       # one signer per slot, sorted
    assert all((s, c) in edges for s, c in assignment)
    assert len({keys_[c] for _, c in assignment}) == len(assignment)             # distinct keys
    for s, c in assignment:                              # the earliest signer of its key that fills the slot
        assert not any(keys_[e] == keys_[c] and (s, e) in edges for e in range(c))
