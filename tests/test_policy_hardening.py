"""Policy hardening: no shape of YAML silently widens a rule, the glob language is defined,
checked at load time (file:line) and matched totally, and the compiled snapshot cannot
smuggle past validation what the YAML loader refuses."""
import fnmatch
import json
import os
import random
import re
import shutil
import textwrap

import pytest

from conftest import APPT
from sifguard.errors import SifguardError
from sifguard.policy import decide as pd
from sifguard.policy import globs
from sifguard.policy.loader import COMPILED_SUFFIX, PolicyError, load, load_fast


from test_policy import root, write  # noqa: E402,F401 - the same policy-file helper and root fixture


def rule_policy(root, rule_body: str) -> str:
    """A policy with one rule whose body (indented YAML under '- name: r') is given."""
    body = textwrap.indent(textwrap.dedent(rule_body).strip("\n"), "    ")
    return f"version: 1\ntrust: {{roots: [{root}]}}\nrules:\n  - name: r\n{body}\n"


# --- 1. silent widening shapes -----------------------------------------------------------
WIDENING = [
    # (rule body, line of the error relative to the policy, message fragment)
    ("match: {path: []}", 5, "match.path is an empty list"),
    ("match: {user: []}", 5, "match.user is an empty list"),
    ("match: {group: []}", 5, "match.group is an empty list"),
    ("match: {account: []}", 5, "match.account is an empty list"),
    ("match: {partition: []}", 5, "match.partition is an empty list"),
    ("match:\n  path: []\n", 6, "match.path is an empty list"),
    ("match: {path: ''}", 5, "non-empty string"),
    ('match: {path: ""}', 5, "non-empty string"),
    ("match: {user: ['']}", 5, "non-empty string"),
    ("match: {user: [' ']}", 5, "non-empty string"),
    ("match: {group: ~}", 5, "not null"),
    ("match: {account: null}", 5, "not null"),
    ("match:\n  partition:\n", 6, "not null"),
    ("match: {user: [alice, ~]}", 5, "not null"),
    ("match: {user: [alice, '']}", 5, "non-empty string"),
    ("match: {user: yes}", 5, "boolean"),
    ("match: {}", 5, "match is empty"),
    ("match: {path: [[/a]]}", 5, "single value"),
    ("match: {path: {a: 1}}", 5, "single value"),
    ("signers: []", 5, "non-empty list"),
    ("signers: ~", 5, "non-empty list"),
    ("signers:\n  - {email: ''}\n", 6, "non-empty string"),
    ("signers:\n  - {subject: ~}\n", 6, "not null"),
    ("signers:\n  - {}\n", 6, "would match anyone"),
    ("signers:\n  - ~\n", 6, "must be a mapping"),
    ("signers:\n  - {issuer: 'sha256:'}\n", 6, "sha256:<64 hex digits>"),
    ("signers:\n  - {issuer: 'sha256:abcd'}\n", 6, "sha256:<64 hex digits>"),
]


@pytest.mark.parametrize("body,line,msg", WIDENING, ids=[w[0].replace("\n", " ")[:40] for w in WIDENING])
def test_widening_shapes_are_errors_with_file_line(tmp_path, cli, root, body, line, msg):
    p = write(tmp_path, rule_policy(root, body))
    with pytest.raises(PolicyError) as e:
        load(p)
    s = str(e.value)
    assert s.startswith(f"{p}:{line}: ") and msg in s, s
    r = cli("policy", "check", p)
    assert r.rc == 2 and r.err.count("\n") == 1 and f"{p}:{line}:" in r.err, r


@pytest.mark.parametrize("section", [
    "trust: {roots: ['']}",
    "trust: {roots: [~]}",
    "trust: {roots: ''}",
    "trust: {roots: [R], intermediates: ['']}",
])
def test_empty_trust_paths_never_mean_the_policy_directory(tmp_path, root, section):
    # "" made absolute would be the policy's own directory: every certificate there trusted
    p = write(tmp_path, f"version: 1\n{section.replace('R', root)}\n")
    with pytest.raises(PolicyError, match=r":2: .*(non-empty string|not null)"):
        load(p)


@pytest.mark.parametrize("key", ["cache_dir: ''", "cache_dir: ~", "shared_cache_dir: ''"])
def test_empty_revocation_dirs(tmp_path, root, key):
    p = write(tmp_path, f"version: 1\ntrust: {{roots: [{root}]}}\nrevocation:\n  {key}\n")
    with pytest.raises(PolicyError, match=":4: "):
        load(p)


def test_errors_are_sifguard_errors():
    assert issubclass(PolicyError, SifguardError) and issubclass(globs.GlobError, SifguardError)


def test_numbers_as_names_and_explicit_match_all_still_load(tmp_path, root):
    p = load(write(tmp_path, rule_policy(root, "match: {user: 1000, account: ['42'], path: '/**'}\nrequire: any")))
    assert p.rules[0].match.user == ("1000",) and p.rules[0].match.path == ("/**",)


# --- 2. the glob language ---------------------------------------------------------------
PATH_TABLE = [
    # glob, path, matches
    ("/a/*.sif", "/a/x.sif", True),
    ("/a/*.sif", "/a/.sif", True),               # * may be empty and matches a leading dot
    ("/a/*.sif", "/a/b/x.sif", False),           # * stays in its segment
    ("/a/*", "/a/", True),
    ("/a/?.sif", "/a/x.sif", True),
    ("/a/?.sif", "/a/xy.sif", False),
    ("/a?b", "/a/b", False),                     # ? never matches /
    ("/a/**", "/a/b/c/d.sif", True),
    ("/a/**", "/a/", True),
    ("/a/**", "/ab", False),
    ("/a/**/b.sif", "/a/b.sif", True),           # **/ also matches zero segments
    ("/a/**/b.sif", "/a/x/y/b.sif", True),
    ("/a/**/b.sif", "/a/xb.sif", False),
    ("/a/**b.sif", "/a/x/yb.sif", True),         # ** inside a segment crosses segments
    ("/a***/c", "/ab/x/c", True),                # a run of stars is **
    ("**/x.sif", "/s/t/x.sif", True),
    ("**/x.sif", "/s/t/yx.sif", False),
    ("/s/*/trial/*.sif", "/s/u/trial/x.sif", True),
    ("/s/*/trial/*.sif", "/s/u/v/trial/x.sif", False),
    ("/a/[abc].sif", "/a/b.sif", True),
    ("/a/[abc].sif", "/a/d.sif", False),
    ("/a/[a-c].sif", "/a/c.sif", True),
    ("/a/[!a-c].sif", "/a/c.sif", False),
    ("/a/[!a-c].sif", "/a/d.sif", True),
    ("/a[!x]b", "/a/b", False),                  # a negated class never matches /
    ("/a[.-0]b", "/a/b", False),                 # nor does a range spanning /
    ("/a[.-0]b", "/a0b", True),
    ("/a/[-a]", "/a/-", True),                   # - first or last is literal
    ("/a/[a-]", "/a/-", True),
    ("/a/[\\]]", "/a/]", True),                  # \] inside brackets
    ("/a/[\\-x]", "/a/-", True),
    ("/a/[\\\\]", "/a/\\", True),
    ("/a/[!\\]]", "/a/]", False),
    ("/a/\\*", "/a/*", True),                    # backslash escapes
    ("/a/\\*", "/a/x", False),
    ("/a/\\[x\\]", "/a/[x]", True),
    ("/a/\\?", "/a/?", True),
    ("/a/\\{b,c\\}", "/a/{b,c}", True),
    ("/a/é*", "/a/été", True),                   # characters, not bytes
    ("/a/[é-ë]", "/a/ê", True),
    ("/a/b.sif", "/a/b.sif", True),
    ("/a/b.sif", "/a/b.sifx", False),            # anchored at both ends
    ("/a/b.sif", "/x/a/b.sif", False),
    ("/a/b.sif", "/a/b.sif\n", False),
    ("/a/.sif", "/a/xsif", False),               # . is literal
    ("/a/(x|y)+", "/a/(x|y)+", True),            # regex syntax is literal
    ("/a/$^", "/a/$^", True),
]


@pytest.mark.parametrize("glob,path,want", PATH_TABLE, ids=[f"{g} {p}" for g, p, _ in PATH_TABLE])
def test_path_glob_table(glob, path, want):
    assert pd.path_matches(glob, path) is want
    assert globs.compile_path(glob).match(path) is want


INVALID_PATH_GLOBS = [
    ("/a/[z-a]", "reversed range"),
    ("/a/[", "unclosed '['"),
    ("/a/[abc", "unclosed '['"),
    ("/a/[]]", "empty bracket"),
    ("/a/[]", "empty bracket"),
    ("/a/[!]", "empty bracket"),
    ("/a/[!]x]", "empty bracket"),
    ("/a/[^a]", "'[^' is ambiguous"),
    ("/a/x]", "unbalanced ']'"),
    ("/a/\\[x]", "unbalanced ']'"),
    ("/a/\\", "trailing '\\'"),
    ("/a/[\\]", "unclosed '['"),
    ("/a/[a\\", "trailing '\\'"),
    ("/a/[a/b]", "cannot match '/'"),
    ("/a/[[:digit:]]", "POSIX classes"),
    ("/a/{b,c}", "brace expansion"),
    ("/a/b}", "brace expansion"),
    ("a/*.sif", "must be absolute"),
    ("*.sif", "must be absolute"),
    ("/a/", "ending in '/'"),
    ("/", "ending in '/'"),
    ("/a//b", "empty segment"),
    ("/a/./b", "'.' segment"),
    ("/a/../b", "'..' segment"),
    ("/a/\x00", "NUL"),
]


@pytest.mark.parametrize("glob,msg", INVALID_PATH_GLOBS, ids=[g for g, _ in INVALID_PATH_GLOBS])
def test_invalid_path_globs_fail_policy_check_and_never_crash_decisions(tmp_path, cli, root, glob, msg):
    with pytest.raises(globs.GlobError, match=re.escape(msg)):
        globs.compile_path(glob)
    # the decision-time matcher is total: an invalid glob matches nothing, never raises
    for path in ("/a/b", "/a/[", "/a/", "", "/a/\\", "/a/z-a"):
        assert pd.path_matches(glob, path) is False
    if "\x00" in glob:
        return
    p = write(tmp_path, rule_policy(root, f"match: {{path: {json.dumps(glob)}}}\nrequire: any"))
    with pytest.raises(PolicyError) as e:
        load(p)
    assert str(e.value).startswith(f"{p}:5: ") and "invalid glob" in str(e.value) and msg in str(e.value)
    r = cli("policy", "check", p)
    assert r.rc == 2 and f"{p}:5:" in r.err and r.err.count("\n") == 1


@pytest.mark.parametrize("field", ["user", "group", "account", "partition"])
@pytest.mark.parametrize("glob", ["[z-a]", "[", "a[]]", "[!]", "[^x]", "x[[:alpha:]]"])
def test_invalid_name_globs_fail_at_load(tmp_path, root, field, glob):
    p = write(tmp_path, rule_policy(root, f"match: {{{field}: {json.dumps(glob)}}}\nrequire: any"))
    with pytest.raises(PolicyError, match=rf":5: .*match.{field}: invalid glob"):
        load(p)


@pytest.mark.parametrize("field", ["subject", "email", "issuer"])
def test_invalid_signer_globs_fail_at_load(tmp_path, root, field):
    p = write(tmp_path, rule_policy(root, f"signers:\n  - {{{field}: 'CN=[z-a]*'}}"))
    with pytest.raises(PolicyError, match=rf":6: .*signer {field}: invalid glob"):
        load(p)


def test_decision_never_raises_on_hand_built_policy():
    from sifguard.policy.model import Match, Policy, Rule
    bad = Rule(name="bad", match=Match(path=("/a/[z-a]", "[", None, 3)))   # not via the loader
    pol = Policy(path="x", version=1, roots=("r",), rules=(bad,))
    for image in ("/a/b", "/a/[", "", None):
        assert pd.match_rule(pol, image, pd.JobContext()).name == "default (built-in)"


def test_path_matching_is_linear_on_hostile_paths():
    """A backtracking regex takes ~forever here; the automaton does len(glob)*len(path) steps."""
    g = "/s/**a**a**a**a**a**a**a**b/*.sif"
    path = "/s/" + "a/" * 2000 + "x.sif"
    assert globs.compile_path(g).match(path) is False
    assert globs.compile_path(g).match(path[:-5] + "b/x.sif") is True
    g = "/s/*a*a*a*a*a*a*b.sif"                          # stars inside one segment
    assert globs.compile_path(g).match("/s/" + "a" * 250 + ".sif") is False
    assert globs.compile_path(g).match("/s/" + "a" * 250 + "b.sif") is True


def _ref_regex(glob: str) -> str:
    """Independent reference for valid path globs without **/ or escapes (checked against the table)."""
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append(".*")
            while i < len(glob) and glob[i] == "*":
                i += 1
            continue
        c = glob[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = glob.index("]", i + 2)
            body = glob[i + 1:j]
            neg = body.startswith("!")
            body = body[1:] if neg else body
            out.append("(?!/)[" + ("^" if neg else "") + body.replace("\\", "\\\\") + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def test_random_globs_against_a_reference():
    rng = random.Random(8)
    alphabet = ["a", "b", "/", "*", "?", "[ab]", "[!a]", "[a-b]", ".", "-"]
    checked = 0
    for _ in range(3000):
        g = "/" + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7)))
        if "**/" in g or g.endswith("/") or "//" in g or "/./" in g or g.endswith("/."):
            continue
        try:
            comp = globs.compile_path(g)
        except globs.GlobError:
            continue
        ref = re.compile(_ref_regex(g), re.S)
        for _ in range(10):
            s = "/" + "".join(rng.choice("ab/.-") for _ in range(rng.randint(0, 8)))
            assert comp.match(s) == bool(ref.fullmatch(s)), (g, s)
            checked += 1
    assert checked > 5000


def test_name_globs_mean_what_fnmatch_means():
    """Every accepted name glob gives fnmatchcase's answer (what rule and signer matching use)."""
    rng = random.Random(5)
    accepted = 0
    for _ in range(20000):
        g = "".join(rng.choice("ab-]![\\/*?^") for _ in range(rng.randint(1, 6)))
        try:
            comp = globs.compile_name(g)
        except globs.GlobError:
            continue
        accepted += 1
        for _ in range(4):
            s = "".join(rng.choice("ab-]!/\\^[") for _ in range(rng.randint(0, 6)))
            assert comp.match(s) == fnmatch.fnmatchcase(s, g), (g, s)
    assert accepted > 1000
    assert globs.name_matches("CN=Smith\\, J*", "CN=Smith\\, John")      # \ is ordinary in DNs
    assert globs.name_matches("[z-a]", "z") is False                     # invalid: never, no raise


# --- end to end: verify --policy decides with bracket globs ------------------------------
def test_verify_with_bracket_and_escape_globs(tmp_path, cli, root):
    img_dir = tmp_path / "img[1]"
    img_dir.mkdir()
    img = img_dir / "x-7.sif"
    shutil.copyfile(os.path.join(APPT, "images", "one-group.sif"), img)
    d = str(tmp_path)
    for glob, rc in ((f"{d}/img\\[1\\]/x-[0-9].sif", 0), (f"{d}/img\\[[!1]\\]/*.sif", 1),
                     (f"{d}/**/x-?.sif", 0), (f"{d}/img*/[!x]*", 1)):
        p = write(tmp_path, rule_policy(root, f"match: {{path: {json.dumps(glob)}}}\nrequire: any"))
        assert cli("policy", "check", p).rc == 0
        r = cli("verify", img, "--policy", p)
        assert r.rc == rc, (glob, r)


# --- the compiled snapshot ----------------------------------------------------------------
def _snapshot_with(p: str, mutate) -> None:
    load_fast(p)                                          # writes a valid snapshot
    snap = p + COMPILED_SUFFIX
    d = json.load(open(snap))
    mutate(d["policy"])
    with open(snap, "w") as f:
        json.dump(d, f)
    os.chmod(snap, 0o644)


@pytest.mark.parametrize("mutate", [
    lambda d: d["rules"][0]["match"].__setitem__("path", ["/a/[z-a]"]),
    lambda d: d["rules"][0]["match"].__setitem__("path", ["/a/["]),
    lambda d: d["rules"][0]["match"].__setitem__("path", [""]),
    lambda d: d["rules"][0]["match"].__setitem__("path", "/tmp/**"),          # a string, not a list
    lambda d: d["rules"][0]["match"].__setitem__("user", ["[!]"]),
    lambda d: d["rules"][0]["match"].__setitem__("user", [None]),
    lambda d: d["rules"][0].__setitem__("signers", [{"subject": None, "email": None, "fingerprint": None,
                                                      "issuer": None, "line": 1}]),
    lambda d: d["rules"][0].__setitem__("signers", [{"subject": "CN=[z-a]", "email": None,
                                                      "fingerprint": None, "issuer": None, "line": 1}]),
    lambda d: d["rules"][0].__setitem__("action", "allow"),
    lambda d: d.__setitem__("roots", []),
], ids=["reversed-range", "unclosed", "empty-glob", "string-not-list", "empty-class", "null-user",
        "empty-signer", "bad-signer-glob", "bad-action", "no-roots"])
def test_snapshot_cannot_smuggle_invalid_policy(tmp_path, root, mutate):
    p = write(tmp_path, rule_policy(root, "match: {path: '/tmp/**', user: alice}\nrequire: signed\n"
                                          "signers:\n  - {email: '*@x.org'}"))
    good = load(p)
    _snapshot_with(p, mutate)
    assert load_fast(p) == good                          # the snapshot was refused, the YAML re-read


def test_snapshot_of_an_older_version_is_ignored(tmp_path, root):
    p = write(tmp_path, rule_policy(root, "match: {path: '/tmp/**'}\nrequire: any"))
    load_fast(p)
    snap = p + COMPILED_SUFFIX
    d = json.load(open(snap))
    d["compiled_version"] = 1
    d["policy"]["rules"][0]["require"] = "signed"        # would differ if the old snapshot were used
    json.dump(d, open(snap, "w"))
    assert load_fast(p).rules[0].require == "any"


def test_policy_check_warns_about_a_bare_directory_path(tmp_path, cli, root):
    d = tmp_path / "apps"
    d.mkdir()
    p = write(tmp_path, rule_policy(root, f"match: {{path: '{d}'}}\nrequire: any"))
    r = cli("policy", "check", p)
    assert r.rc == 0 and "warning" in r.err and f"{d}/**" in r.err
    p = write(tmp_path, rule_policy(root, f"match: {{path: '{d}/**'}}\nrequire: any"))
    r = cli("policy", "check", p)
    assert r.rc == 0 and "warning" not in r.err
