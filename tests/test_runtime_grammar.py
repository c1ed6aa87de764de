"""The apptainer/singularity grammar against the real flag tables, both flavours.

Every flag of every image-running command is tried in every form pflag accepts; the image
found must be the one the runtime would run — checked against the product parser AND the
independent stand-in runtime (tests/tools/standin_runtime.py, which follows cobra/pflag's
code). A property test then throws random command lines built from the tables at both.
"""
import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sifguard.slurm import runtime_argv as ra
from sifguard.slurm.runtime_flags import SOURCES, TABLES

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "tools"))
import standin_runtime as ref  # noqa: E402

STANDIN = os.path.join(os.path.dirname(__file__), "tools", "standin_runtime.py")
FLAVORS = ("apptainer", "singularityce")
TOOL = {"apptainer": "apptainer", "singularityce": "singularity"}
IMG = "img.sif"
# operands of each image-running command; the image is the first
OPERANDS = {"exec": [IMG, "cmd"], "run": [IMG], "shell": [IMG], "test": [IMG], "instance start": [IMG, "web"],
            "instance run": [IMG, "web"], "inspect": [IMG], "run-help": [IMG], "oci mount": [IMG, "/bundle"]}


def value_for(typ):
    return {"int": "1", "uint32": "1", "stringToString": "K=v"}.get(typ, "v")


def check(argv, flavor, image, index):
    """Both parsers must find `image` at argv[index]; returns a failure text or ''."""
    inv = ra.parse(argv, flavor)
    out = ref.run(argv, flavor)
    bad = []
    if inv.error or (inv.image, inv.image_index) != (image, index) or not inv.runs_image:
        bad.append(f"product {inv.image!r}@{inv.image_index} err={inv.error!r}")
    if (out.kind, out.image, out.image_index) != ("image", image, index):
        bad.append(f"stand-in {out}")
    return f"{' '.join(argv)}: {'; '.join(bad)}" if bad else ""


def forms(flag, switch_shorts):
    """(words before the image, image word) in every spelling pflag accepts."""
    name, short, typ = flag[0], flag[1], flag[2]
    other = next((s for s in switch_shorts if s != short), None)
    out = []
    if typ == "bool":
        out += [[f"--{name}"], [f"--{name}=true"], [f"--{name}=false"], [f"--{name}", f"--{name}=0"]]
        if short:
            out += [[f"-{short}"], [f"-{short}=false"], [f"-{short}{short}"]]
            if other:
                out += [[f"-{short}{other}"], [f"-{other}{short}"], [f"-{other}{short}=true"]]
        out = [(f, IMG) for f in out] + [([f"--{name}=1"], "-"), ([f"--{name}"], "signed.sif")]
    else:
        v = value_for(typ)
        word = "signed.sif" if typ not in ("int", "uint32", "stringToString") else v   # taken as the value
        out += [[f"--{name}", v], [f"--{name}={v}"], [f"--{name}", word]]
        if typ not in ("int", "uint32", "stringToString"):
            out += [[f"--{name}", "--nv"], [f"--{name}", "--"], [f"--{name}", "-"]]
        if short:
            out += [[f"-{short}{v}"], [f"-{short}", v], [f"-{short}={v}"], [f"-{short}", word]]
            if other:
                out += [[f"-{other}{short}", v], [f"-{other}{short}{v}"], [f"-{other}{short}={v}"]]
        out = [(f, IMG) for f in out]
        if typ not in ("int", "uint32", "stringToString"):
            out.append(([f"--{name}="], "-"))
    return out


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("command", sorted(OPERANDS))
def test_every_flag_every_form(flavor, command):
    table = TABLES[flavor]
    flags = table[command]["flags"]
    switch_shorts = [f[1] for f in flags if f[1] and f[2] == "bool"]
    ops = OPERANDS[command]
    head = [TOOL[flavor], *command.split()]
    failures, n = [check(head + ops, flavor, IMG, len(head))], 1
    for flag in flags:
        for before, image in forms(flag, switch_shorts):
            argv = head + before + [image] + ops[1:]
            failures.append(check(argv, flavor, image, len(head) + len(before)))
            n += 1
            if table[command]["max_args"] is None:      # flags after the image belong to the container
                after = head + [image] + before + ops[1:]
                failures.append(check(after, flavor, image, len(head)))
                n += 1
        if flag[2] != "bool":                           # a value flag last, with nothing after it
            for w in ([f"--{flag[0]}"] + ([f"-{flag[1]}"] if flag[1] else [])):
                inv = ra.parse(head + [w], flavor)
                assert inv.error and inv.runs_image and inv.image is None, (w, inv)
                assert ref.run(head + [w], flavor).kind == "error"
    failures = [f for f in failures if f]
    assert n >= 3 * len(flags) and not failures, "\n".join(failures[:20])


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("parent,child", [("", "exec"), ("", "instance start"), ("instance", "start"),
                                          ("", "oci mount"), ("", "run")])
def test_parent_level_flags_before_the_command_word(flavor, parent, child):
    """The root's flags (and any other parent's) go before the command word, cobra's Traverse
    deciding which words are their values."""
    table = TABLES[flavor]
    path = f"{parent} {child}".strip()
    ops = OPERANDS[path]
    failures = []
    for flag in table[parent]["flags"]:
        v = value_for(flag[2])
        spellings = [[f"--{flag[0]}"], [f"--{flag[0]}=false"]] if flag[2] == "bool" else \
            [[f"--{flag[0]}", v], [f"--{flag[0]}={v}"], [f"--{flag[0]}", "exec"]]
        if flag[1]:
            spellings += [[f"-{flag[1]}"]] if flag[2] == "bool" else [[f"-{flag[1]}", v], [f"-{flag[1]}{v}"],
                                                                       [f"-{flag[1]}={v}"]]
        for sp in spellings:
            argv = [TOOL[flavor], *parent.split(), *sp, *child.split(), *ops]
            failures.append(check(argv, flavor, IMG, len(argv) - len(ops)))
    failures = [f for f in failures if f]
    assert not failures, "\n".join(failures[:20])


BYPASSES = [
    # value flags the old grammar took for switches: the word after them is their value
    ("apptainer exec --no-env signed.sif evil.sif cmd", "evil.sif", 4),
    ("apptainer exec --tmpdir signed.sif evil.sif cmd", "evil.sif", 4),
    ("apptainer exec --docker-username signed.sif evil.sif cmd", "evil.sif", 4),
    ("apptainer exec --docker-password signed.sif evil.sif cmd", "evil.sif", 4),
    ("apptainer exec --netns-path signed.sif evil.sif cmd", "evil.sif", 4),
    ("apptainer exec --device signed.sif evil.sif cmd", "evil.sif", 4),
    ("apptainer exec --cdi-dirs signed.sif evil.sif cmd", "evil.sif", 4),
    ("apptainer run --authfile signed.sif evil.sif", "evil.sif", 4),
    ("apptainer run --runscript-timeout signed.sif evil.sif", "evil.sif", 4),
    ("apptainer instance start --pid-file signed.sif evil.sif web", "evil.sif", 5),
    ("apptainer instance start --dmtcp-launch signed.sif evil.sif web", "evil.sif", 5),
    # switches the old grammar took as taking a value: they do not swallow the image
    ("singularity exec --oci signed.sif cmd", "signed.sif", 3),
    ("singularity exec --tmp-sandbox signed.sif cmd", "signed.sif", 3),
    ("singularity exec --keep-layers signed.sif cmd", "signed.sif", 3),
    ("apptainer exec --unsquash signed.sif cmd", "signed.sif", 3),
    ("apptainer exec --nv=false signed.sif cmd", "signed.sif", 3),
    ("apptainer exec -e=false signed.sif cmd", "signed.sif", 3),
    # bundles and attached values
    ("apptainer exec -eB signed.sif evil.sif cmd", "evil.sif", 4),
    ("apptainer exec -eBsigned.sif evil.sif cmd", "evil.sif", 3),
    ("apptainer exec -Be signed.sif cmd", "signed.sif", 3),
    ("apptainer exec -B=x signed.sif cmd", "signed.sif", 3),
    ("apptainer exec -Bx signed.sif cmd", "signed.sif", 3),
    ("apptainer exec -B= signed.sif cmd", "signed.sif", 3),
    ("apptainer exec -eCcB /x signed.sif cmd", "signed.sif", 4),
    ("apptainer exec -ei signed.sif cmd", "signed.sif", 3),
    ("apptainer exec -o signed.sif evil.sif cmd", "evil.sif", 4),
    ("apptainer exec -eo signed.sif evil.sif cmd", "evil.sif", 4),
    # end of options, flags after the image
    ("apptainer exec -- --nv cmd", "--nv", 3),
    ("apptainer exec -B x -- evil.sif --bind", "evil.sif", 5),
    ("apptainer exec signed.sif --bind evil.sif", "signed.sif", 2),
    ("apptainer exec - cmd", "-", 2),
    # global flags, instance, aliases of parents
    ("apptainer -d -c /etc/a.conf exec signed.sif cmd", "signed.sif", 5),
    ("apptainer --config=/c -q exec signed.sif cmd", "signed.sif", 4),
    ("apptainer -c exec run evil.sif", "evil.sif", 4),
    ("apptainer -- exec run evil.sif", "evil.sif", 4),
    ("apptainer -c -- exec run evil.sif", "evil.sif", 5),
    ("apptainer --debug=false instance start -B x signed.sif web", "signed.sif", 6),
    ("apptainer instance run --boot signed.sif web", "signed.sif", 4),
    ("singularity --config /x exec --no-oci --data d.oci.sif signed.sif cmd", "signed.sif", 7),
    ("apptainer inspect --json -H signed.sif", "signed.sif", 4),
    ("apptainer run-help --app x signed.sif", "signed.sif", 4),
    ("apptainer oci mount signed.sif /bundle", "signed.sif", 3),
]


@pytest.mark.parametrize("line,image,index", BYPASSES)
def test_bypass_variants(line, image, index):
    argv = line.split()
    flavor = "singularityce" if argv[0] == "singularity" else "apptainer"
    assert argv[index] == image
    assert not check(argv, flavor, image, index)


REFUSED = [
    "apptainer exec --bogus img.sif cmd",          # unknown long option
    "apptainer exec -Z img.sif cmd",               # unknown shorthand
    "apptainer exec -eZ img.sif cmd",              # unknown inside a bundle
    "apptainer exec --oci img.sif cmd",            # SingularityCE's flag, not Apptainer's
    "singularity --build-config exec img.sif cmd",  # Apptainer's flag, read as SingularityCE
    "apptainer exec --bind",                       # value flag without its value
    "apptainer exec -B",
    "apptainer exec -eB",
    "apptainer exec --nv=maybe img.sif cmd",       # switch given a non-boolean
    "apptainer exec ---nv img.sif cmd",            # bad syntax
    "apptainer exec --=x img.sif cmd",
    "apptainer exec img.sif",                      # exec needs a command too
    "apptainer exec",
    "apptainer inspect a.sif b.sif",               # inspect takes one image
    "apptainer --nonsense exec img.sif cmd",       # unknown global option
    "apptainer -x exec img.sif cmd",
    "apptainer -dc exec img.sif cmd",              # -c (value) last in a bundle at the top: no value
    "apptainer frobnicate img.sif",                # unknown command
    "apptainer instance frob img.sif",             # unknown subcommand
    "apptainer EXEC img.sif cmd",                  # commands are case-sensitive
    "apptainer exec -test.v img.sif cmd",          # pflag silently skips -test.* words
    "apptainer exec -etest.v img.sif cmd",
    "apptainer --help exec img.sif cmd",           # help before a command word: refused as ambiguous
    "apptainer oci run -b /bundle id",             # runs a bundle directory
    "apptainer oci create --bundle /bundle id",
]


@pytest.mark.parametrize("line", REFUSED)
def test_refused_fail_closed(line):
    argv = line.split()
    flavor = "singularityce" if argv[0] == "singularity" else "apptainer"
    inv = ra.parse(argv, flavor)
    assert inv.error and inv.runs_image and inv.image is None, inv


@pytest.mark.parametrize("line,command", [
    ("apptainer version", "version"), ("apptainer --version", "version"), ("apptainer -d --version", "version"),
    ("apptainer help exec", "help"), ("apptainer -h", "help"), ("apptainer --help", "help"),
    ("apptainer exec --help img.sif cmd", "help"), ("apptainer exec -h", "help"),
    ("apptainer instance start -h img web", "help"), ("apptainer instance list", "instance list"),
    ("apptainer instance stop --all", "instance stop"), ("apptainer cache clean -f", "cache clean"),
    ("apptainer caps list", "capability list"), ("apptainer keys list", "key list"),
    ("apptainer remote list", "remote list"), ("apptainer sif dump 1 x.sif", "sif"),
    ("apptainer siftool list x.sif", "sif"), ("apptainer build x.sif docker://a", "build"),
    ("apptainer pull docker://a", "pull"), ("apptainer push x.sif oras://r/x", "push"),
    ("apptainer overlay create --size 10 o.img", "overlay create"), ("apptainer sign x.sif", "sign"),
    ("apptainer verify x.sif", "verify"), ("apptainer checkpoint list", "checkpoint list"),
    ("apptainer plugin list", "plugin list"), ("apptainer completion bash", "completion"),
    ("apptainer instance", "instance"), ("apptainer", ""), ("singularity data package d x", "data package"),
    ("apptainer oci state id", "oci state"),
])
def test_commands_that_run_no_image(line, command):
    argv = line.split()
    flavor = "singularityce" if argv[0] == "singularity" else "apptainer"
    inv = ra.parse(argv, flavor)
    assert (inv.command, inv.runs_image, inv.error, inv.image) == (command, False, "", None)
    assert ref.run(argv, flavor).kind not in ("image", "bundle")


def test_build_pull_push_for_the_policy():
    assert ra.is_build_or_pull(ra.parse("apptainer build x.sif x.def".split()))
    assert ra.is_build_or_pull(ra.parse("apptainer --debug pull --force docker://a".split()))
    assert not ra.is_build_or_pull(ra.parse("apptainer build --bogus x.sif x.def".split()))
    assert not ra.is_build_or_pull(ra.parse("apptainer exec x.sif ls".split()))


def test_flavor_default_and_singularity_name():
    """Without a flavour both names use Apptainer's table (Apptainer installs `singularity` too)."""
    assert ra.parse("singularity exec --no-env a b.sif cmd".split()).image == "b.sif"
    assert ra.parse("singularity exec --oci a.sif cmd".split()).error
    assert ra.parse("singularity exec --oci a.sif cmd".split(), "singularityce").image == "a.sif"
    assert ra.parse("apptainer exec a.sif cmd".split(), "podman").error


@pytest.mark.parametrize("image,scheme", [
    ("docker://alpine", "docker"), ("docker:alpine", "docker"), ("library://a/b/c", "library"),
    ("library:a/b", "library"), ("oras://r/x:1", "oras"), ("instance://web", "instance"),
    ("DOCKER://alpine", "DOCKER"), ("oci-sif://x", "oci-sif"), ("ipfs:Qm", "ipfs"), ("zzz://x", "zzz"),
    ("./docker:alpine", None), ("a:b.sif", None), ("/x/y.sif", None), ("img.sif", None),
])
def test_scheme_as_the_runtime_splits_it(image, scheme):
    assert ra.parse(["apptainer", "run", image]).scheme == scheme


def test_outside_content_and_environment():
    inv = ra.parse("apptainer exec -o ov.img:ro --overlay a.img,b.img -B /d:/d:image-src=/,x "
                   "--fusemount host:f img.sif cmd".split())
    assert inv.image == "img.sif"
    assert inv.extra_images == ("ov.img", "a.img", "b.img", "/d")   # /d: an image (image-src)
    assert set(inv.outside_content) == {"overlay", "bind", "fusemount"}
    env = {"APPTAINER_OVERLAY": "env.img", "SINGULARITY_BIND": "/h", "DOCKER_HOST": "tcp://x",
           "APPTAINER_CACHEDIR": "/tmp/c", "APPTAINER_NV": "1"}
    inv = ra.parse("apptainer run img.sif".split(), env=env)
    assert inv.image == "img.sif" and "env.img" in inv.extra_images
    assert {"overlay", "bind"} <= set(inv.outside_content)
    got = {(f, var) for f, var, _ in inv.env_options}
    assert {("overlay", "APPTAINER_OVERLAY"), ("bind", "SINGULARITY_BIND"), ("docker-host", "DOCKER_HOST"),
            ("nv", "APPTAINER_NV"), ("cachedir", "APPTAINER_CACHEDIR")} <= got
    # SingularityCE reads only SINGULARITY_-prefixed variables
    inv = ra.parse("singularity run img.sif".split(), "singularityce", env=env)
    assert {(f, var) for f, var, _ in inv.env_options} >= {("bind", "SINGULARITY_BIND")}
    assert "APPTAINER_OVERLAY" not in {var for _, var, _ in inv.env_options}
    # the environment never moves the image operand
    assert ra.parse("apptainer exec --nv a.sif ls".split(), env={"APPTAINER_NV": "0"}).image == "a.sif"


def test_tables_cover_both_projects():
    assert set(SOURCES) == set(FLAVORS) and all(len(c) == 40 for c in SOURCES.values())
    for fl in FLAVORS:
        t = TABLES[fl]
        assert {"exec", "run", "shell", "test", "instance start", "instance run", "inspect"} <= set(t)
        assert len(t) > 80 and sum(len(c["flags"]) for c in t.values()) > 600
        for path, c in t.items():
            for sub in c["subcommands"]:
                assert f"{path} {sub}".strip() in t
    no_env = {f[0]: f for f in TABLES["apptainer"]["exec"]["flags"]}["no-env"]
    assert no_env[2] != "bool"                       # the example: --no-env takes a value


# ---------------------------------------------------------------- property: gate image == runtime image

def _words_for(flags):
    out = []
    for name, short, typ, *_ in flags:
        if typ == "bool":
            out += [[f"--{name}"], [f"--{name}=false"], [f"--{name}=true"], [f"--{name}=maybe"]]
            if short:
                out += [[f"-{short}"], [f"-{short}=0"]]
        else:
            v = value_for(typ)
            out += [[f"--{name}", v], [f"--{name}={v}"], [f"--{name}"]]
            if short:
                out += [[f"-{short}", v], [f"-{short}{v}"], [f"-{short}={v}"], [f"-{short}"]]
    return out


VALUES = ["v", "1", "K=v", "signed.sif", "evil.sif", "exec", "run", "start", "instance", "--", "-", "-e",
          "--nv", "docker://a", "-test.v", "--help", "-h", "--version", "cmd", "web"]


@st.composite
def command_lines(draw):
    flavor = draw(st.sampled_from(FLAVORS))
    table = TABLES[flavor]
    path = draw(st.sampled_from(sorted(OPERANDS) + ["version", "instance list", "build", "key list", "oci run"]))
    words = [draw(st.sampled_from(["apptainer", "singularity", "/usr/bin/apptainer"]))]
    pool_root = _words_for(table[""]["flags"]) + [["--bogus"], ["-x"], ["--"], ["--help"], ["-h"]]
    words += [w for ws in draw(st.lists(st.sampled_from(pool_root), max_size=3)) for w in ws]
    parts = path.split()
    if parts[0] == "instance" and len(parts) > 1:
        words.append("instance")
        words += [w for ws in draw(st.lists(st.sampled_from(pool_root[-5:] + [["-e"]]), max_size=1)) for w in ws]
        words.append(parts[1])
    else:
        words += parts
    own = _words_for(table[path]["flags"])
    shorts = [f[1] for f in table[path]["flags"] if f[1]]
    misc = [["--bogus"], ["--bogus=1"], ["-Z"], ["--"], ["-"], ["-test.v"], ["--oci"], ["--no-env"],
            ["--help=false"], ["-h"], ["--tmp-sandbox"], ["--build-config"]]
    if shorts:
        bundle = st.lists(st.sampled_from(shorts), min_size=2, max_size=4).map(lambda cs: ["-" + "".join(cs)])
        misc_bundles = [draw(bundle) for _ in range(3)]
    else:
        misc_bundles = []
    junk = st.sampled_from(misc + misc_bundles + [[v] for v in VALUES])
    item = junk if not own else st.one_of(st.sampled_from(own), st.sampled_from(own), st.sampled_from(own), junk)
    words += [w for ws in draw(st.lists(item, max_size=6)) for w in ws]
    words += draw(st.lists(st.sampled_from(["signed.sif", "evil.sif", "cmd", "web", "--nv", "-B", "x"]),
                           min_size=1, max_size=3))
    return flavor, words


def _quirk(argv):
    return any(w.startswith("-") and not w.startswith("--") and "test." in w for w in argv)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command_lines())
def test_gate_image_is_runtime_image_or_refused(case):
    flavor, argv = case
    inv = ra.parse(argv, flavor)
    out = ref.run(argv, flavor)
    if out.kind == "image":
        if inv.error:
            assert _quirk(argv), f"refused although the runtime would run {out.image}: {inv.error}"
        else:
            assert inv.runs_image and (inv.command, inv.image, inv.image_index) == (
                out.command, out.image, out.image_index), (argv, inv, out)
    if out.kind == "bundle":
        assert inv.error
    if not inv.error and not inv.runs_image:
        assert out.kind not in ("image", "bundle"), (argv, inv, out)


# ---------------------------------------------------------------- end to end: shim -> stand-in runtime

def test_standin_script_records_argv_and_image(tmp_path):
    log = tmp_path / "log"
    exe = tmp_path / "apptainer"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
    os.chmod(exe, 0o755)
    env = dict(os.environ, SIFGUARD_STANDIN_LOG=str(log))
    p = subprocess.run([str(exe), "exec", "--no-env", "signed.sif", "evil.sif", "ls"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "standin: image exec evil.sif"
    rec = json.loads(log.read_text().splitlines()[-1])
    assert rec["argv"][1:] == ["exec", "--no-env", "signed.sif", "evil.sif", "ls"]
    assert (rec["image"], rec["image_index"]) == ("evil.sif", 4)
    p = subprocess.run([str(exe), "exec", "--bogus", "x"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 1
