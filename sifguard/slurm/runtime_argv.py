"""Which image an `apptainer …` / `singularity …` command line runs (pure).

The answer is worked out the way the runtime's own parser (cobra + pflag) does it, from the
real flag tables in `runtime_flags.py` (generated from the projects' sources):

* the command is found by cobra's `Traverse`: flags before a command word are parsed against
  that level's flags only (the root's `-d -c FILE …` before `exec`; `instance`'s before
  `start`), using Traverse's own look-ahead rule for which words are flag values;
* the command's flags are parsed with pflag, interspersing off: `--flag v`, `--flag=v`,
  `-Bv`, `-B v`, `-B=v`, bundles `-eCB v` (a value shorthand takes the rest of the word, or
  the next word when it is last), switches never take the next word (`--nv=false` is fine),
  `--` ends the options, and the first operand ends them too — it is the image;
* cobra's additions are modelled: `-h/--help` on every command, `--version` on the root,
  the `help` and `completion` commands.

Fail closed: an option the table does not know, a value option without its value, a switch
given a non-boolean value, an unknown command, too few operands, or a form whose meaning is
doubtful (`-test.…` words, `--help`/`--version` with operands at the top level) gives an Invocation
with `error` set AND `runs_image` True: callers must refuse it. Commands that run no image
(version, help, cache, key, remote, build, pull, …) give runs_image False and no error.

Flavours: "apptainer" (Apptainer, which also installs `singularity` as a compatibility name)
and "singularityce" (Sylabs SingularityCE). With flavor None both `apptainer` and
`singularity` are read with the Apptainer table; a site running SingularityCE says so in the
Slurm hook configuration. Commands treated as running an image:
exec, run, shell, test, instance start, instance run (the container is started from it);
inspect and run-help (they read, and for some image kinds mount and execute in, the image);
oci mount (mounts the image as an OCI bundle that `oci run` then starts). `oci create` and
`oci run` start a bundle directory that cannot be verified as an image: refused. build, pull
and push run no image here; `is_build_or_pull` lets the policy decide them.

The environment (`env`) never changes how argv is parsed (flag variables such as
APPTAINER_OVERLAY are applied after parsing, to flags left unset on the command line), but it
can add content: the variables that set the command's flags are reported in `env_options`,
overlay images they name in `extra_images`, and every flag (command line or environment)
that brings content or code from outside the image in `outside_content`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from sifguard.slurm.runtime_flags import TABLES

TOOLS = ("apptainer", "singularity")
FLAVORS = ("apptainer", "singularityce")
ENV_PREFIXES = {"apptainer": ("APPTAINER_", "SINGULARITY_"), "singularityce": ("SINGULARITY_",)}
CACHE_DIR_KEYS = ("CACHEDIR",)

IMAGE_COMMANDS = frozenset({"exec", "run", "shell", "test", "instance start", "instance run",
                            "inspect", "run-help", "oci mount"})
BUNDLE_COMMANDS = frozenset({"oci create", "oci run"})
BUILD_COMMANDS = frozenset({"build", "pull", "push"})
# Added by cobra itself, not in the projects' sources; none of them runs an image.
COBRA_COMMANDS = frozenset({"help", "completion", "__complete", "__completeNoDesc"})
# Flags that bring content or code from outside the verified image into the container.
OUTSIDE_CONTENT = frozenset({"overlay", "bind", "mount", "data", "fusemount", "containlibs", "env-file",
                             "dmtcp-launch", "dmtcp-restart", "sharens", "proot", "device", "cdi-dirs",
                             "config"})
# Transports the runtimes recognise without `//` (uri.IsValid); any `x://` is a transport too.
URI_SCHEMES = {
    "apptainer": frozenset({"library", "shub", "docker", "docker-archive", "docker-daemon", "oci",
                            "oci-archive", "http", "https", "oras", "buildkit", "dockerfile", "ipfs"}),
    "singularityce": frozenset({"library", "shub", "docker", "docker-archive", "docker-daemon", "oci",
                                "oci-archive", "http", "https", "oras"}),
}
_BOOL_WORDS = frozenset({"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"})
_TRUE_WORDS = frozenset({"1", "t", "T", "TRUE", "true", "True"})


@dataclass(frozen=True)
class Invocation:
    tool: str                  # apptainer | singularity ("" when argv is not one of them)
    command: str               # command path: "exec", "instance start", "version", "help", "" (none)
    image: str | None = None   # the image operand as written
    image_index: int | None = None   # its index in argv (to substitute a verified copy)
    runs_image: bool = False   # True also whenever `error` is set: the line may run something
    error: str = ""            # why the command line is refused (callers must refuse when set)
    flavor: str = ""           # grammar used: apptainer | singularityce
    options: tuple[tuple[str, str], ...] = ()        # (long flag name, value) from argv, in order
    operands: tuple[str, ...] = ()                   # the command's operands (image first)
    extra_images: tuple[str, ...] = ()               # overlay/data/image-src images (argv and env)
    outside_content: tuple[str, ...] = ()            # flags set that bring outside content/code
    env_options: tuple[tuple[str, str, str], ...] = ()  # (flag, variable, value) set by env

    @property
    def scheme(self) -> str | None:
        """Transport of the image operand (see `scheme_of`), or None for a local path."""
        return None if self.image is None else scheme_of(self.image, self.flavor or None)


def scheme_of(image: str, flavor: str | None = None) -> str | None:
    """Transport of an image operand as the runtime splits it (uri.Split): `x://…` for any x,
    or a known transport without `//` (`docker:alpine`, `library:a/b`); case kept, so
    `DOCKER://x` is an (unknown) transport, not a file. None for a local path."""
    head, sep, rest = image.partition(":")
    if not sep:
        return None
    if rest.startswith("//"):
        return head
    return head if head in URI_SCHEMES.get(flavor or "apptainer", ()) else None


def tool_of(arg0: str) -> str | None:
    base = os.path.basename(arg0)
    return base if base in TOOLS else None


def is_build_or_pull(inv: Invocation) -> bool:
    return not inv.error and inv.command in BUILD_COMMANDS


class _Refused(Exception):
    def __init__(self, command: str, why: str):
        super().__init__(why)
        self.command = command


@dataclass(frozen=True)
class _Flag:
    name: str
    short: str
    switch: bool
    env: tuple[str, ...] = ()
    bare_env: bool = False


@dataclass(frozen=True)
class _FlagSet:
    long: Mapping[str, _Flag]
    short: Mapping[str, _Flag]


@dataclass(frozen=True)
class _Node:
    path: str
    runnable: bool
    min_args: int
    max_args: int | None
    children: Mapping[str, str]      # word (name or alias) -> child path
    external: bool
    traverse_flags: _FlagSet         # what cobra knows while traversing (no help/version yet)
    exec_flags: _FlagSet             # what it knows when the command executes


def _flagset(flags: list[_Flag]) -> _FlagSet:
    return _FlagSet({f.name: f for f in flags}, {f.short: f for f in flags if f.short})


class _Grammar:
    """A flavor's command tree, each node built from the table the first time the parser
    reaches it (a command line touches two or three of ~95 nodes; the shim runs per task)."""

    def __init__(self, flavor: str):
        self.table = TABLES[flavor]
        self.nodes: dict[str, _Node] = {}

    def __getitem__(self, path: str) -> _Node:
        node = self.nodes.get(path)
        if node is None:
            node = self.nodes[path] = self._build(path)
        return node

    def _build(self, path: str) -> _Node:
        table = self.table
        c = table.get(path)
        if c is None:
            if path in COBRA_COMMANDS:
                none = _flagset([])
                return _Node(path, True, 0, None, {}, True, none, none)
            raise KeyError(path)
        flags = [_Flag(f[0], f[1], f[2] == "bool", tuple(f[5]), bool(f[6])) for f in c["flags"]]
        children = {}
        for sub in c["subcommands"]:
            child = f"{path} {sub}".strip()
            children[sub] = child
            for alias in table[child]["aliases"]:
                children.setdefault(alias, child)
        if path == "":
            for name in sorted(COBRA_COMMANDS):
                children.setdefault(name, name)
        full = list(flags)
        if "help" not in {f.name for f in flags}:
            taken = {f.short for f in flags}
            full.append(_Flag("help", "" if "h" in taken else "h", True))
        if path == "" and "version" not in {f.name for f in flags}:
            taken = {f.short for f in full}
            full.append(_Flag("version", "" if "v" in taken else "v", True))
        return _Node(path, c["runnable"], c["min_args"], c["max_args"], children,
                     c["external_subcommands"], _flagset(flags), _flagset(full))


@lru_cache(maxsize=None)
def _grammar(flavor: str) -> _Grammar:
    return _Grammar(flavor)


def _is_flag_word(w: str) -> bool:
    return (len(w) >= 3 and w.startswith("--")) or (len(w) >= 2 and w[0] == "-" and w[1] != "-")


def _traverse(node: _Node, argv: list[str], i: int) -> tuple[list[int], int | None]:
    """cobra's Traverse at one level: (indices of the words it takes as this level's flags,
    index of the subcommand word or None when there is none)."""
    taken, in_flag, fs = [], False, node.traverse_flags
    for j in range(i, len(argv)):
        w = argv[j]
        if w.startswith("--") and "=" not in w:
            f = fs.long.get(w[2:])
            in_flag = not (f is not None and f.switch)
        elif w.startswith("-") and "=" not in w and len(w) == 2 and not (
                w[1] in fs.short and fs.short[w[1]].switch):
            in_flag = True
        elif in_flag:
            in_flag = False
        elif not _is_flag_word(w):
            return taken, (j if w in node.children else None)
        taken.append(j)
    return taken, None


def _parse_flags(node: _Node, fs: _FlagSet, argv: list[str], idx: list[int]):
    """pflag's parse with interspersing off, over argv[k] for k in idx.
    Returns ([(flag, value)], [operand indices])."""
    opts: list[tuple[_Flag, str]] = []
    k, n = 0, len(idx)

    def need_value(flag_word: str) -> str:
        nonlocal k
        if k >= n:
            raise _Refused(node.path, f"option {flag_word} needs a value")
        v = argv[idx[k]]
        k += 1
        return v

    def setv(f: _Flag, value: str, word: str):
        if f.switch and value not in _BOOL_WORDS:
            raise _Refused(node.path, f"option {word} is a switch; '{value}' is not true/false")
        opts.append((f, value))

    while k < n:
        w = argv[idx[k]]
        k += 1
        if len(w) < 2 or w[0] != "-":
            return opts, idx[k - 1:]
        if w == "--":
            return opts, idx[k:]
        if w[1] == "-":
            body = w[2:]
            if body[0] in "-=":
                raise _Refused(node.path, f"bad option syntax {w}")
            name, eq, val = body.partition("=")
            f = fs.long.get(name)
            if f is None:
                raise _Refused(node.path, f"unknown option --{name} for '{node.path or 'the runtime'}'")
            if eq:
                setv(f, val, w)
            elif f.switch:
                setv(f, "true", w)
            else:
                setv(f, need_value(w), w)
            continue
        rest = w[1:]
        while rest:
            if rest.startswith("test."):
                raise _Refused(node.path, f"option word {w} is skipped by pflag as a Go test flag")
            f = fs.short.get(rest[0])
            if f is None:
                raise _Refused(node.path, f"unknown option -{rest[0]} in {w} for '{node.path or 'the runtime'}'")
            if len(rest) > 2 and rest[1] == "=":
                setv(f, rest[2:], w)
                rest = ""
            elif f.switch:
                setv(f, "true", w)
                rest = rest[1:]
            elif len(rest) > 1:
                setv(f, rest[1:], w)
                rest = ""
            else:
                setv(f, need_value(w), w)
                rest = ""
    return opts, []


def _is_set(opts: list[tuple[_Flag, str]], name: str) -> bool:
    value = None
    for f, v in opts:
        if f.name == name:
            value = v
    return value in _TRUE_WORDS


def parse(argv: list[str], flavor: str | None = None, env: Mapping[str, str] | None = None) -> Invocation:
    if not argv:
        return Invocation("", "", error="empty command line")
    tool = tool_of(argv[0])
    if tool is None:
        return Invocation("", "", error="not an apptainer/singularity command")
    fl = flavor or "apptainer"
    if fl not in TABLES:
        return Invocation(tool, "", runs_image=True, flavor=fl, error=f"unknown runtime flavor '{fl}'")
    try:
        return _parse(tool, fl, argv, env)
    except _Refused as e:
        return Invocation(tool, e.command, runs_image=True, flavor=fl, error=str(e))


def _parse(tool: str, fl: str, argv: list[str], env: Mapping[str, str] | None) -> Invocation:
    nodes = _grammar(fl)
    node, i = nodes[""], 1
    options: list[tuple[_Flag, str]] = []
    while True:
        if node.path in COBRA_COMMANDS or node.external:
            return Invocation(tool, node.path, flavor=fl)
        taken, sub = _traverse(node, argv, i)
        if sub is None:
            break
        # help/version are not yet flags here (cobra adds them when a command executes), so a
        # --help/-h/--version before a command word is an unknown option: refused below
        opts, _ = _parse_flags(node, node.traverse_flags, argv, taken)
        options += opts
        node, i = nodes[node.children[argv[sub]]], sub + 1
    opts, operand_idx = _parse_flags(node, node.exec_flags, argv, list(range(i, len(argv))))
    options += opts
    operands = tuple(argv[k] for k in operand_idx)
    if _is_set(opts, "help"):
        if node.path == "" and operand_idx:
            raise _Refused("help", "--help with operands at the top level: refused as ambiguous")
        return Invocation(tool, "help", flavor=fl, operands=operands)
    if node.path == "" and _is_set(opts, "version"):
        if operand_idx:
            raise _Refused("version", "--version with operands at the top level: refused as ambiguous")
        return Invocation(tool, "version", flavor=fl)
    if not node.runnable or node.path == "" or node.children:
        if operand_idx:
            raise _Refused(node.path, f"unknown command '{operands[0]}' for '{f'{tool} {node.path}'.strip()}'")
        return Invocation(tool, node.path, flavor=fl)
    if len(operands) < node.min_args or (node.max_args is not None and len(operands) > node.max_args):
        raise _Refused(node.path, f"'{node.path}' takes {node.min_args}"
                                  f"{'+' if node.max_args is None else '-' + str(node.max_args)} operands, "
                                  f"got {len(operands)}")
    if node.path in BUNDLE_COMMANDS:
        raise _Refused(node.path, f"'{node.path}' starts an OCI bundle directory, which cannot be verified")
    named = tuple((f.name, v) for f, v in options)
    if node.path not in IMAGE_COMMANDS:
        return Invocation(tool, node.path, flavor=fl, options=named, operands=operands)
    env_opts = _env_options(fl, node, env or {})
    extra = _extra_images(named) + _extra_images((f, v) for f, _, v in env_opts)
    outside = sorted({n for n, _ in named if n in OUTSIDE_CONTENT} | {f for f, _, _ in env_opts
                                                                       if f in OUTSIDE_CONTENT})
    if env:
        for p in ENV_PREFIXES[fl]:
            for key in CACHE_DIR_KEYS:
                if p + key in env:
                    env_opts.append(("cachedir", p + key, env[p + key]))
    return Invocation(tool, node.path, operands[0], operand_idx[0], True, flavor=fl, options=named,
                      operands=operands, extra_images=extra, outside_content=tuple(outside),
                      env_options=tuple(env_opts))


def _env_options(fl: str, node: _Node, env: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """Variables that set flags of the root or of this command (cmdline.EnvSetValue/AppendValue)."""
    out = []
    for fs in (_grammar(fl)[""].traverse_flags, node.traverse_flags):
        for f in fs.long.values():
            for key in f.env:
                names = [p + key for p in ENV_PREFIXES[fl]] + ([key] if f.bare_env else [])
                for var in names:
                    if env.get(var, "").strip():
                        out.append((f.name, var, env[var]))
    return out


def _extra_images(opts) -> tuple[str, ...]:
    """Images that a flag value mounts besides the image operand."""
    out = []
    for name, value in opts:
        if name in ("overlay", "data"):
            for item in value.split(","):
                item = item.strip()
                for suffix in (":ro", ":rw"):
                    if name == "overlay" and item.endswith(suffix):
                        item = item[: -len(suffix)]
                if name == "data":
                    item = item.split(":", 1)[0]
                if item:
                    out.append(item)
        elif name == "bind" and "image-src" in value:
            for item in value.split(","):
                if "image-src" in item:
                    out.append(item.split(":", 1)[0])
        elif name == "mount" and "image-src" in value:
            for part in value.split(","):
                k, _, v = part.partition("=")
                if k.strip() in ("src", "source") and v:
                    out.append(v)
    return tuple(out)
