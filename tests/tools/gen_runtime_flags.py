#!/usr/bin/env python3
"""Regenerate sifguard/slurm/runtime_flags.py from source checkouts of the runtimes.

    python3 tests/tools/gen_runtime_flags.py apptainer=/path/to/apptainer \
        singularityce=/path/to/singularity [--commit apptainer=SHA] [--describe apptainer=TAG] ... \
        > sifguard/slurm/runtime_flags.py

Each path is a checkout (or `git archive` extract) holding `cmd/internal/cli/*.go` and `docs/*.go`.
Nothing is built or imported from them: the Go files are read as text and only facts are
recorded (command names, aliases, argument counts, flag names, shorthands, value types,
hidden/deprecated, environment keys). Test and non-Linux files are skipped.

The recognised forms are the ones these projects use: `X = cmdline.Flag{...}` / `&cmdline.Flag{...}`
literals, `X = &cobra.Command{...}` literals (also `:=`), and `cmdManager.RegisterCmd`,
`RegisterSubCmd`, `RegisterFlagForCmd`, `SetCmdGroup`, `GetCmdGroup` calls. Anything the
script cannot resolve stops it with a message, so a new form in a later release is noticed
rather than silently dropped.
"""

from __future__ import annotations

import os
import pprint
import re
import sys


def strip_comments(src: str) -> str:
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if c == "/" and i + 1 < n and src[i + 1] == "/":
            j = src.find("\n", i)
            i = n if j < 0 else j
            continue
        if c == "/" and i + 1 < n and src[i + 1] == "*":
            j = src.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        if c in "\"'`":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if (src[j] == "\\" and c != "`") else 1
            out.append(src[i:j + 1])
            i = j + 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def balanced(src: str, i: int) -> int:
    """Index just past the bracket group opening at src[i]."""
    pairs = {"(": ")", "{": "}", "[": "]"}
    stack, n = [], len(src)
    while i < n:
        c = src[i]
        if c in "\"'`":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if (src[j] == "\\" and c != "`") else 1
            i = j + 1
            continue
        if c in pairs:
            stack.append(pairs[c])
        elif c in ")}]":
            if not stack or stack.pop() != c:
                raise SystemExit(f"unbalanced brackets near: {src[max(0, i - 80):i + 20]!r}")
            if not stack:
                return i + 1
        i += 1
    raise SystemExit("unterminated bracket group")


def split_top(body: str) -> list[str]:
    parts, depth, cur, i, n = [], 0, [], 0, len(body)
    while i < n:
        c = body[i]
        if c in "\"'`":
            j = i + 1
            while j < n and body[j] != c:
                j += 2 if (body[j] == "\\" and c != "`") else 1
            cur.append(body[i:j + 1])
            i = j + 1
            continue
        if c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def fields(body: str) -> dict[str, str]:
    out = {}
    for p in split_top(body):
        m = re.match(r"(\w+)\s*:\s*(.*)\Z", p, re.S)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def go_string(expr: str, consts: dict[str, str]) -> str:
    expr = expr.strip()
    if expr.startswith("`") and expr.endswith("`"):
        return expr[1:-1]
    if expr.startswith('"') and expr.endswith('"'):
        return bytes(expr[1:-1], "utf-8").decode("unicode_escape")
    key = expr.split(".")[-1]
    if key in consts:
        return consts[key]
    raise SystemExit(f"cannot resolve string {expr!r}")


def go_strings(expr: str, consts: dict[str, str]) -> list[str]:
    m = re.match(r"\[\]string\s*\{(.*)\}\Z", expr.strip(), re.S)
    if not m:
        raise SystemExit(f"cannot resolve []string {expr!r}")
    return [go_string(x, consts) for x in split_top(m.group(1))]


def go_type(default: str) -> str:
    d = default.strip()
    if d in ("false", "true"):
        return "bool"
    if d.startswith("[]string"):
        return "stringSlice"
    if d.startswith("cmdline.StringArray"):
        return "stringArray"
    if d.startswith("map[string]string"):
        return "stringToString"
    if d.startswith("uint32("):
        return "uint32"
    if re.fullmatch(r"-?\d+", d):
        return "int"
    return "string"   # string literals, string constants, calls returning a path/arch


def read_go(root: str, sub: str) -> list[tuple[str, str]]:
    d = os.path.join(root, sub)
    out = []
    for name in sorted(os.listdir(d)):
        if not name.endswith(".go") or name.endswith("_test.go"):
            continue
        if re.search(r"_(darwin|windows|freebsd|openbsd|netbsd|solaris)\.go$", name):
            continue
        with open(os.path.join(d, name), encoding="utf-8") as f:
            out.append((name, strip_comments(f.read())))
    return out


def docs_consts(root: str) -> dict[str, str]:
    consts = {}
    for _, src in read_go(root, "docs"):
        for m in re.finditer(r"\b(\w+)\s+(?:string\s*)?=\s*(`[^`]*`|\"(?:[^\"\\\n]|\\.)*\")", src):
            consts[m.group(1)] = go_string(m.group(2), {})
    return consts


def literals(src: str, typ: str):
    for m in re.finditer(r"\b(\w+)\s*:?=\s*&?" + re.escape(typ) + r"\s*\{", src):
        start = m.end() - 1
        end = balanced(src, start)
        yield m.group(1), src[start + 1:end - 1]


def calls(src: str, name: str):
    for m in re.finditer(r"\bcmdManager\." + name + r"\s*\(", src):
        start = m.end() - 1
        end = balanced(src, start)
        yield split_top(src[start + 1:end - 1])


def args_bounds(expr: str | None) -> tuple[int, int | None]:
    if not expr:
        return 0, None
    e = expr.replace("cobra.", "")
    for pat, lo, hi in ((r"ExactArgs\((\d+)\)", 1, 1), (r"MinimumNArgs\((\d+)\)", 1, None),
                        (r"MaximumNArgs\((\d+)\)", 0, 1), (r"NoArgs", 0, 0), (r"ArbitraryArgs", 0, None)):
        m = re.fullmatch(pat, e)
        if m:
            v = int(m.group(1)) if m.groups() else 0
            return (v if lo else 0), (v if hi == 1 else hi)
    m = re.fullmatch(r"RangeArgs\((\d+),\s*(\d+)\)", e)
    if m:
        return int(m.group(1)), int(m.group(2))
    return 0, None      # custom validator: counted as "any"; the parser does not rely on it


def extract(root: str, root_var: str) -> dict:
    consts = docs_consts(root)
    files = read_go(root, "cmd/internal/cli")
    flags, cmds = {}, {}
    for _, src in files:
        for var, body in literals(src, "cmdline.Flag"):
            f = fields(body)
            if "Name" not in f:
                continue
            flags[var] = {
                "name": go_string(f["Name"], consts),
                "short": go_string(f["ShortHand"], consts) if "ShortHand" in f else "",
                "type": go_type(f.get("DefaultValue", '""')),
                "hidden": f.get("Hidden") == "true",
                "deprecated": bool(f.get("Deprecated")) and f.get("Deprecated") != '""',
                "env": tuple(go_strings(f["EnvKeys"], consts)) if "EnvKeys" in f else (),
                "without_prefix": f.get("WithoutPrefix") == "true",
            }
        for var, body in literals(src, "cobra.Command"):
            f = fields(body)
            use = go_string(f["Use"], consts)
            aliases = tuple(go_strings(f["Aliases"], consts)) if "Aliases" in f else ()
            lo, hi = args_bounds(f.get("Args"))
            cmds[var] = {"name": use.split()[0], "aliases": aliases,
                         "runnable": any(f.get(k, "nil") != "nil" for k in ("Run", "RunE")),
                         "hidden": f.get("Hidden") == "true", "min_args": lo, "max_args": hi,
                         "parent": None, "flags": [], "external_subcommands": False}
    cmds[root_var] = {"name": "", "aliases": (), "runnable": True, "hidden": False, "min_args": 0,
                      "max_args": None, "parent": None, "flags": [], "external_subcommands": False}
    groups: dict[str, list[str]] = {}
    local_groups: dict[str, list[str]] = {}
    for fname, src in files:
        for a in calls(src, "RegisterCmd"):
            cmds[a[0]]["parent"] = root_var
        for a in calls(src, "RegisterSubCmd"):
            cmds[a[1]]["parent"] = a[0]
        for a in calls(src, "SetCmdGroup"):
            # first definition wins: the projects define "actions_instance" twice, in the Linux
            # branch of `if instanceStartCmd != nil` and in its (dead on Linux) else branch
            groups.setdefault(go_string(a[0], consts), [x for x in a[1:] if x != "nil"])
        if "siftool.AddCommands" in src:           # subcommands come from the external sif module
            for var, body in literals(src, "cobra.Command"):
                cmds[var]["external_subcommands"] = True
    for fname, src in files:
        for m in re.finditer(r"\b(\w+)\s*:=\s*cmdManager\.GetCmdGroup\(\s*(\"[^\"]*\")\s*\)", src):
            local_groups[m.group(1)] = go_string(m.group(2), consts)

    def group(name: str) -> list[str]:
        return [t for x in groups[name] for t in targets(x)]

    def targets(expr: str) -> list[str]:
        e = expr.strip()
        if e.endswith("..."):
            e = e[:-3].strip()
            m = re.fullmatch(r"cmdManager\.GetCmdGroup\(\s*(\"[^\"]*\")\s*\)", e)
            if m:
                return group(go_string(m.group(1), consts))
            m = re.fullmatch(r"append\((.*)\)", e, re.S)
            if m:
                parts = split_top(m.group(1))
                return [t for p in parts for t in targets(p)]
            if e in local_groups:
                return group(local_groups[e])
            raise SystemExit(f"cannot resolve command group {expr!r}")
        m = re.fullmatch(r"cmdManager\.GetCmdGroup\(\s*(\"[^\"]*\")\s*\)", e)
        if m:
            return group(go_string(m.group(1), consts))
        if e in cmds:
            return [e]
        raise SystemExit(f"cannot resolve command {expr!r}")

    for fname, src in files:
        for a in calls(src, "RegisterFlagForCmd"):
            fv = a[0].lstrip("&").strip()
            if fv not in flags:
                raise SystemExit(f"{fname}: unknown flag variable {fv}")
            for t in (x for p in a[1:] for x in targets(p)):
                if fv not in cmds[t]["flags"]:
                    cmds[t]["flags"].append(fv)

    def path(var: str) -> str | None:
        names, v = [], var
        while v != root_var:
            c = cmds[v]
            if c["parent"] is None:
                return None            # defined but never registered (e.g. another platform)
            names.append(c["name"])
            v = c["parent"]
        return " ".join(reversed(names))

    table = {}
    for var, c in cmds.items():
        p = path(var)
        if p is None:
            continue
        fl = []
        for fv in c["flags"]:
            f = flags[fv]
            fl.append((f["name"], f["short"], f["type"], f["hidden"], f["deprecated"], f["env"],
                       f["without_prefix"]))
        fl.sort()
        subs = sorted(cmds[v]["name"] for v in cmds if cmds[v]["parent"] == var and path(v) is not None)
        table[p] = {"aliases": c["aliases"], "runnable": c["runnable"], "hidden": c["hidden"],
                    "min_args": c["min_args"], "max_args": c["max_args"], "subcommands": tuple(subs),
                    "external_subcommands": c["external_subcommands"], "flags": tuple(fl)}
    return table


HEADER = '''"""The command-line facts of Apptainer and SingularityCE, as data (generated; do not edit).

Generated by tests/tools/gen_runtime_flags.py from the Go sources (cmd/internal/cli/*.go and
docs/*.go) of:
{sources}
TABLES[flavor][command path] -> dict:
  aliases, runnable (has Run/RunE), hidden, min_args/max_args (cobra Args; max None = any),
  subcommands (names), external_subcommands (subcommand tree defined outside the project, e.g.
  `sif`, so not listed), flags: tuples (long, shorthand, go type, hidden, deprecated,
  env keys, env key also read without prefix).
Go type "bool" is a switch (pflag NoOptDefVal "true": never consumes the next word, `--x=false`
allowed); every other type takes a value (`--x v`, `--x=v`, `-Xv`, `-X v`, `-X=v`). No flag in
either project has an optional value. The root command path is "". Cobra's own additions
(the `help` flag on every command, `--version` on the root, the `help` and `completion`
commands) are not in the sources and are added by the parser.
"""

'''


def compare(main: dict, other: dict) -> list[str]:
    """Same command, same flag name or shorthand, different arity or spelling."""
    out = []
    for path in set(main) & set(other):
        m = {f[0]: f for f in main[path]["flags"]}
        o = {f[0]: f for f in other[path]["flags"]}
        for name in set(m) & set(o):
            if (m[name][2] == "bool") != (o[name][2] == "bool") or m[name][1] != o[name][1]:
                out.append(f"{path or '(root)'} --{name}: {m[name][1:3]} vs {o[name][1:3]}")
        ms = {f[1]: f[0] for f in main[path]["flags"] if f[1]}
        for f in other[path]["flags"]:
            if f[1] and f[1] in ms and ms[f[1]] != f[0]:
                out.append(f"{path or '(root)'} -{f[1]}: --{ms[f[1]]} vs --{f[0]}")
    return sorted(out)


def gomod_versions(root: str) -> str:
    try:
        with open(os.path.join(root, "go.mod"), encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return "(go.mod not read)"
    got = re.findall(r"github\.com/spf13/(cobra|pflag)\s+(v\S+)", text)
    return ", ".join(f"{n} {v}" for n, v in got) or "(cobra/pflag not listed)"


def main(argv: list[str]) -> int:
    roots = {"apptainer": "apptainerCmd", "singularityce": "singularityCmd"}
    paths, commits, describe, also = {}, {}, {}, {}
    it = iter(argv)
    for a in it:
        if a == "--commit":
            k, v = next(it).split("=", 1)
            commits[k] = v
        elif a == "--also":
            k, v = next(it).split("=", 1)
            also.setdefault(k, []).append(v)
        elif a == "--describe":
            k, v = next(it).split("=", 1)
            describe[k] = v
        elif "=" in a:
            k, v = a.split("=", 1)
            paths[k] = v
        else:
            print(f"usage: {__doc__}", file=sys.stderr)
            return 2
    if not paths or any(k not in roots for k in paths):
        print(f"usage: {__doc__}", file=sys.stderr)
        return 2
    tables = {k: extract(p, roots[k]) for k, p in paths.items()}
    checked = []
    for k, others in also.items():
        for other in others:
            conflicts = compare(tables[k], extract(other, roots[k]))
            if conflicts:
                print(f"{k} {other}: flags whose arity or shorthand differ from the table:", file=sys.stderr)
                for c in conflicts:
                    print(f"  {c}", file=sys.stderr)
                return 1
            checked.append(f"  {k}: {os.path.basename(os.path.normpath(other))}")
    src_lines = "\n".join(f"  {k}: {commits.get(k, '(commit not given)')} {describe.get(k, '')}".rstrip()
                          for k in paths)
    src_lines += "\n" + "\n".join(f"  {k} go.mod: {gomod_versions(p)}" for k, p in paths.items())
    if checked:
        src_lines += ("\nChecked against these older source trees: no flag of a command has a different arity or\n"
                      "shorthand there (flags only they have are unknown here, so refused):\n" + "\n".join(checked))
    sys.stdout.write(HEADER.format(sources=src_lines))
    sys.stdout.write("SOURCES = " + pprint.pformat(
        {k: commits.get(k, "") for k in paths}, width=110) + "\n\n")
    sys.stdout.write("TABLES = " + pprint.pformat(tables, width=110, sort_dicts=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
