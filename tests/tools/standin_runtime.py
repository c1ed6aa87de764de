#!/usr/bin/env python3
"""A stand-in for the `apptainer` / `singularity` executables, for tests.

Apptainer and SingularityCE cannot be installed here, so this plays their part: it reads
its command line the way their cobra/pflag front end does and reports which image the
runtime would start. It is an independent reference, written apart from
`sifguard/slurm/runtime_argv.py` and following the Go code's structure (cobra v1.10
`Command.Traverse`/`execute`/`findNext`, pflag v1.0.10 `parseArgs`/`parseLongArg`/
`parseSingleShortArg`, including their quirks: Traverse's one-word look-ahead, `-test.*`
words skipped, `--help` unknown until a command executes). It shares only the data
table `sifguard/slurm/runtime_flags.py` with the product.

As a library: `run(argv, flavor) -> Outcome`.
As a program (install it under the name `apptainer`/`singularity`): it appends one JSON line
{"argv": [...], "outcome": ..., "command": ..., "image": ..., "image_index": ...} to the file
named by $SIFGUARD_STANDIN_LOG, prints `standin: <outcome> <command> <image>` on stdout, and
exits 0 when it would have run something, 1 on a command-line error. The flavour comes from
$SIFGUARD_STANDIN_FLAVOR (apptainer | singularityce; default apptainer).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from sifguard.slurm.runtime_flags import TABLES  # noqa: E402

RUNS_IMAGE = {"exec", "run", "shell", "test", "instance start", "instance run", "inspect", "run-help",
              "oci mount"}
RUNS_BUNDLE = {"oci create", "oci run"}


class PflagError(Exception):
    pass


class ErrHelp(Exception):
    pass


@dataclass
class Outcome:
    kind: str                 # "image" (runs an image) | "bundle" | "norun" | "help" | "version" | "error"
    command: str = ""
    image: str | None = None
    image_index: int | None = None
    detail: str = ""


@dataclass
class PFlag:
    name: str
    shorthand: str
    typ: str
    no_opt_def_val: str = ""
    value: object = None
    changed: bool = False


_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def _set_value(flag: PFlag, value: str):
    t = flag.typ
    if t == "bool":
        if value in _TRUE:
            flag.value = True
        elif value in _FALSE:
            flag.value = False
        else:
            raise PflagError(f"invalid argument {value!r} for --{flag.name}")
    elif t in ("int", "uint32"):
        try:
            v = int(value.replace("_", ""), 0) if value.strip() == value else int("x")
        except ValueError:
            raise PflagError(f"invalid argument {value!r} for --{flag.name}") from None
        if t == "uint32" and not 0 <= v < 2 ** 32:
            raise PflagError("out of range")
        flag.value = v
    elif t == "stringToString":
        for item in value.split(","):
            if "=" not in item:
                raise PflagError(f"{item} must be formatted as key=value")
        flag.value = value
    elif t == "stringSlice":
        if value.count('"') % 2:
            raise PflagError("bare quote in csv")
        flag.value = value
    else:
        flag.value = value
    flag.changed = True


class FlagSet:
    def __init__(self, interspersed=True):
        self.formal: dict[str, PFlag] = {}
        self.shorthands: dict[str, PFlag] = {}
        self.interspersed = interspersed
        self.args: list[str] = []

    def add(self, f: PFlag):
        if f.typ == "bool":
            f.no_opt_def_val = "true"
        self.formal[f.name] = f
        if f.shorthand:
            self.shorthands[f.shorthand] = f

    def lookup(self, name):
        return self.formal.get(name)

    def shorthand_lookup(self, c):
        return self.shorthands.get(c)

    # pflag FlagSet.Parse / parseArgs
    def parse(self, arguments: list[str]):
        self.args = []
        args = list(arguments)
        while args:
            s = args[0]
            args = args[1:]
            if len(s) == 0 or s[0] != "-" or len(s) == 1:
                if not self.interspersed:
                    self.args.append(s)
                    self.args.extend(args)
                    return
                self.args.append(s)
                continue
            if s[1] == "-":
                if len(s) == 2:
                    self.args.extend(args)
                    break
                args = self._parse_long_arg(s, args)
            else:
                args = self._parse_short_arg(s, args)

    def _parse_long_arg(self, s, args):
        a = args
        name = s[2:]
        if len(name) == 0 or name[0] == "-" or name[0] == "=":
            raise PflagError(f"bad flag syntax: {s}")
        split = name.split("=", 1)
        name = split[0]
        flag = self.formal.get(name)
        if flag is None:
            if name == "help":
                raise ErrHelp()
            raise PflagError(f"unknown flag: --{name}")
        if len(split) == 2:
            value = split[1]
        elif flag.no_opt_def_val != "":
            value = flag.no_opt_def_val
        elif len(a) > 0:
            value = a[0]
            a = a[1:]
        else:
            raise PflagError(f"flag needs an argument: --{name}")
        _set_value(flag, value)
        return a

    def _parse_single_short_arg(self, shorthands, args):
        out_args = args
        if shorthands.startswith("test."):
            return "", out_args
        out_shorts = shorthands[1:]
        c = shorthands[0]
        flag = self.shorthands.get(c)
        if flag is None:
            if c == "h":
                raise ErrHelp()
            raise PflagError(f"unknown shorthand flag: {c!r} in -{shorthands}")
        if len(shorthands) > 2 and shorthands[1] == "=":
            value = shorthands[2:]
            out_shorts = ""
        elif flag.no_opt_def_val != "":
            value = flag.no_opt_def_val
        elif len(shorthands) > 1:
            value = shorthands[1:]
            out_shorts = ""
        elif len(args) > 0:
            value = args[0]
            out_args = args[1:]
        else:
            raise PflagError(f"flag needs an argument: {c!r} in -{shorthands}")
        _set_value(flag, value)
        return out_shorts, out_args

    def _parse_short_arg(self, s, args):
        a = args
        shorthands = s[1:]
        while len(shorthands) > 0:
            shorthands, a = self._parse_single_short_arg(shorthands, args)
        return a


class Command:
    def __init__(self, path, spec, version=False):
        self.path = path
        self.name = path.split(" ")[-1] if path else ""
        self.aliases = tuple(spec.get("aliases", ()))
        self.runnable = spec.get("runnable", True)
        self.min_args = spec.get("min_args", 0)
        self.max_args = spec.get("max_args")
        self.external = spec.get("external_subcommands", False)
        self.commands: list[Command] = []
        self.has_version = version
        self.fs = FlagSet(interspersed=spec.get("interspersed", False))
        for (name, short, typ, *_rest) in spec.get("flags", ()):
            self.fs.add(PFlag(name, short, typ))

    def find_next(self, nxt):
        for cmd in self.commands:
            if cmd.name == nxt or nxt in cmd.aliases:
                return cmd
        return None

    # cobra Command.Traverse
    def traverse(self, args):
        flags = []
        in_flag = False
        for i, arg in enumerate(args):
            if arg.startswith("--") and "=" not in arg:
                f = self.fs.lookup(arg[2:])
                in_flag = not (f is not None and f.no_opt_def_val != "")
                flags.append(arg)
                continue
            if arg.startswith("-") and "=" not in arg and len(arg) == 2:
                f = self.fs.shorthand_lookup(arg[1:2])
                if not (f is not None and f.no_opt_def_val != ""):
                    in_flag = True
                    flags.append(arg)
                    continue
            if in_flag:
                in_flag = False
                flags.append(arg)
                continue
            if (len(arg) >= 3 and arg[:2] == "--") or (len(arg) >= 2 and arg[0] == "-" and arg[1] != "-"):
                flags.append(arg)
                continue
            cmd = self.find_next(arg)
            if cmd is None:
                return self, args
            self.fs.parse(flags)      # errors propagate (cobra returns them from ExecuteC)
            return cmd.traverse(args[i + 1:])
        return self, args

    # cobra Command.execute, as far as deciding what runs
    def execute(self, a, argv_len):
        if "help" not in self.fs.formal:
            self.fs.add(PFlag("help", "" if self.fs.shorthand_lookup("h") else "h", "bool"))
        if self.has_version and "version" not in self.fs.formal:
            self.fs.add(PFlag("version", "" if self.fs.shorthand_lookup("v") else "v", "bool"))
        try:
            self.fs.parse(a)
        except ErrHelp:
            return Outcome("help", self.path)
        if self.fs.formal["help"].value:
            return Outcome("help", self.path)
        if self.has_version and self.fs.formal["version"].value:
            return Outcome("version", self.path)
        if not self.runnable or self.external:
            return Outcome("norun", self.path)
        args = self.fs.args
        if self.path == "":
            return Outcome("error", "", detail="invalid command")
        if len(args) < self.min_args or (self.max_args is not None and len(args) > self.max_args):
            return Outcome("error", self.path, detail="wrong number of arguments")
        if self.path in RUNS_IMAGE:
            return Outcome("image", self.path, args[0], argv_len - len(args))
        if self.path in RUNS_BUNDLE:
            return Outcome("bundle", self.path)
        return Outcome("norun", self.path)


def build_tree(flavor: str) -> Command:
    table = TABLES[flavor]
    cmds = {p: Command(p, spec, version=(p == "")) for p, spec in table.items()}
    for p, c in cmds.items():
        if p:
            parent = p.rsplit(" ", 1)[0] if " " in p else ""
            cmds[parent].commands.append(c)
    root = cmds[""]
    for name in ("help", "completion"):        # cobra's own commands
        root.commands.append(Command(name, {"external_subcommands": True, "interspersed": True}))
    return root


def run(argv: list[str], flavor: str = "apptainer") -> Outcome:
    """What the runtime named argv[0] would do with argv."""
    root = build_tree(flavor)
    args = list(argv[1:])
    try:
        cmd, rest = root.traverse(args)
    except (PflagError, ErrHelp) as e:
        return Outcome("error", detail=f"{type(e).__name__}: {e}")
    if cmd.external and cmd is not root:
        return Outcome("norun", cmd.path)
    try:
        return cmd.execute(rest, len(argv))
    except PflagError as e:
        return Outcome("error", cmd.path, detail=str(e))


def main(argv: list[str]) -> int:
    flavor = os.environ.get("SIFGUARD_STANDIN_FLAVOR", "apptainer")
    out = run(argv, flavor)
    log = os.environ.get("SIFGUARD_STANDIN_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"argv": argv, "outcome": out.kind, "command": out.command,
                                "image": out.image, "image_index": out.image_index}) + "\n")
    print(f"standin: {out.kind} {out.command} {out.image or ''}".rstrip())
    return 1 if out.kind == "error" else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
