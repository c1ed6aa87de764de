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


def read_slurm_conf(path: str) -> tuple[dict[str, list[Setting]], list[str]]:
    """{lower-case key: every setting in file order}, and the files read (path first)."""
    settings: dict[str, list[Setting]] = {}
    files: list[str] = []

    def walk(p: str, depth: int) -> None:
        if len(files) >= MAX_FILES or depth > 16:
            raise ConfError(f"{p}: too many or too deeply nested Include files")
        files.append(p)
        for n, raw in enumerate(_read(p), 1):
            line = _strip_comment(raw)
            if not line:
                continue
            head, _, rest = line.partition(" ")
            if head.lower() == "include" and "=" not in head:
                for inc in _includes(rest, os.path.dirname(p)):
                    walk(inc, depth + 1)
                continue
            try:
                words = shlex.split(line)
            except ValueError:
                words = line.split()
            for w in words:
                k, eq, v = w.partition("=")
                if eq and k:
                    settings.setdefault(k.lower(), []).append(Setting(k, v, p, n))
    walk(path, 0)
    return settings, files


def last(settings: dict[str, list[Setting]], key: str) -> Setting | None:
    vals = settings.get(key.lower())
    return vals[-1] if vals else None


def read_plugstack(path: str) -> tuple[list[Plugin], list[str]]:
    plugins: list[Plugin] = []
    files: list[str] = []

    def walk(p: str, depth: int) -> None:
        if len(files) >= MAX_FILES or depth > 16:
            raise ConfError(f"{p}: too many or too deeply nested include files")
        files.append(p)
        for n, raw in enumerate(_read(p), 1):
            line = _strip_comment(raw)
            if not line:
                continue
            try:
                words = shlex.split(line)
            except ValueError:
                words = line.split()
            kind = words[0].lower()
            if kind == "include" and len(words) > 1:
                for inc in _includes(words[1], os.path.dirname(p)):
                    walk(inc, depth + 1)
            elif kind in ("required", "optional") and len(words) > 1:
                plugins.append(Plugin(kind, words[1], tuple(words[2:]), p, n))
    walk(path, 0)
    return plugins, files
