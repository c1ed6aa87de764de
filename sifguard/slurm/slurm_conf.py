"""Reading slurm.conf and plugstack.conf the way Slurm does, as far as the doctor needs:
`Key=Value` pairs (keys case-insensitive, several per line, `#` comments, the last
setting wins), `Include` directives (relative to the including file, globs), and
plugstack.conf's `required|optional PLUGIN ARGS…` / `include GLOB` lines."""

from __future__ import annotations

import glob
import os
import shlex
from dataclasses import dataclass

MAX_FILES = 64          # an Include loop or a glob over a huge directory stops here
MAX_BYTES = 1 << 20


class ConfError(Exception):
    pass


@dataclass(frozen=True)
class Setting:
    key: str            # as written
    value: str
    file: str
    line: int


@dataclass(frozen=True)
class Plugin:
    kind: str           # required | optional
    path: str
    args: tuple[str, ...]
    file: str
    line: int


def _read(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(MAX_BYTES).splitlines()
    except OSError as e:
        raise ConfError(f"{path}: {e.strerror}") from None


def _includes(spec: str, base: str) -> list[str]:
    spec = spec.strip().strip('"')
    if not os.path.isabs(spec):
        spec = os.path.join(base, spec)
    found = sorted(glob.glob(spec)) if glob.has_magic(spec) else [spec]
    return found


def _strip_comment(line: str) -> str:
    out = []
    for i, ch in enumerate(line):
        if ch == "#" and (i == 0 or line[i - 1] != "\\"):
            break
        out.append(ch)
    return "".join(out).strip()


def _walk(path: str, include_args, on_line) -> list[str]:
    """Every non-comment line of `path` and the files it includes (depth and count bounded):
    `include_args(line)` is the include operand of an include line, else None;
    `on_line(line, file, number)` gets the rest. Returns the files read, `path` first."""
    files: list[str] = []

    def walk(p: str, depth: int) -> None:
        if len(files) >= MAX_FILES or depth > 16:
            raise ConfError(f"{p}: too many or too deeply nested include files")
        files.append(p)
        for n, raw in enumerate(_read(p), 1):
            line = _strip_comment(raw)
            if not line:
                continue
            inc = include_args(line)
            if inc is not None:
                for f in _includes(inc, os.path.dirname(p)):
                    walk(f, depth + 1)
            else:
                on_line(line, p, n)
    walk(path, 0)
    return files


def _words(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:
        return line.split()


def read_slurm_conf(path: str) -> tuple[dict[str, list[Setting]], list[str]]:
    """{lower-case key: every setting in file order}, and the files read (path first)."""
    settings: dict[str, list[Setting]] = {}

    def include(line: str):
        head, _, rest = line.partition(" ")
        return rest if head.lower() == "include" and "=" not in head else None

    def setting(line: str, p: str, n: int) -> None:
        for w in _words(line):
            k, eq, v = w.partition("=")
            if eq and k:
                settings.setdefault(k.lower(), []).append(Setting(k, v, p, n))
    return settings, _walk(path, include, setting)


def last(settings: dict[str, list[Setting]], key: str) -> Setting | None:
    vals = settings.get(key.lower())
    return vals[-1] if vals else None


def read_plugstack(path: str) -> tuple[list[Plugin], list[str]]:
    plugins: list[Plugin] = []

    def include(line: str):
        words = _words(line)
        return words[1] if len(words) > 1 and words[0].lower() == "include" else None

    def plugin(line: str, p: str, n: int) -> None:
        words = _words(line)
        if len(words) > 1 and words[0].lower() in ("required", "optional"):
            plugins.append(Plugin(words[0].lower(), words[1], tuple(words[2:]), p, n))
    return plugins, _walk(path, include, plugin)
