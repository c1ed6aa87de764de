"""What a shell word expands to, when that is certain (pure).

A word node of tree-sitter-bash becomes its list of fields the way bash builds them —
quote removal, parameter expansion, field splitting on the default IFS, tilde — or a
`Dyn` when any part is only known at run time: command/arithmetic/process substitution,
a variable whose value is not certain (the caller's `lookup` decides), positional and
special parameters, globs, brace expansion, `~user`, arrays and `${…}` operators other
than `-`/`+`/`?` with or without `:`. `Dyn.one` says whether the word still makes
exactly one field (every unknown part was inside double quotes), which lets a caller
keep counting argument positions past it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

UNSET = type("Unset", (), {"__repr__": lambda self: "UNSET"})()


@dataclass(frozen=True)
class Dyn:
    raw: str
    one: bool          # exactly one field whatever the value
    why: str = ""


class _Dynamic(Exception):
    def __init__(self, why: str, splits: bool):
        super().__init__(why)
        self.why, self.splits = why, splits


# lookup(name, node) -> str (certain value) | UNSET (certainly unset) | None (not certain)
Lookup = Callable[[str, object], object]

_GLOB = re.compile(r"[*?]|\[.+\]")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_IFS = re.compile(r"[ \t\n]+")
_DQ_ESC = re.compile(r"\\([$`\"\\\n])")
_ANSI = {"a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
         "v": "\v", "\\": "\\", "'": "'", '"': '"', "?": "?"}
_SPLIT_OPS = {":-", "-", ":+", "+", ":?", "?"}


def _unescape_unquoted(raw: str) -> tuple[str, str]:
    """(text, the characters that were not escaped — for glob/brace checks)."""
    if "\\" not in raw:
        return raw, raw
    out, bare, i = [], [], 0
    while i < len(raw):
        c = raw[i]
        if c == "\\" and i + 1 < len(raw):
            if raw[i + 1] != "\n":
                out.append(raw[i + 1])
                bare.append("_")
            i += 2
            continue
        out.append(c)
        bare.append(c)
        i += 1
    return "".join(out), "".join(bare)


def _ansi_c(body: str) -> str:
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c != "\\" or i + 1 >= len(body):
            out.append(c)
            i += 1
            continue
        d = body[i + 1]
        if d in _ANSI:
            out.append(_ANSI[d])
            i += 2
        elif d in "xuU":
            n = {"x": 2, "u": 4, "U": 8}[d]
            m = re.match(r"[0-9A-Fa-f]{1,%d}" % n, body[i + 2:])
            if not m:
                out.append(body[i:i + 2])
                i += 2
                continue
            out.append(chr(int(m.group(0), 16)))
            i += 2 + len(m.group(0))
        elif d in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i + 1:])
            out.append(chr(int(m.group(0), 8) & 0xFF))
            i += 1 + len(m.group(0))
        else:                       # \cX and anything odd: do not guess
            raise _Dynamic("an ANSI-C escape the scanner does not decode", False)
    return "".join(out)


class _Eval:
    def __init__(self, src: bytes, lookup: Lookup, assign: bool = False):
        self.src, self.lookup, self.assign = src, lookup, assign

    def text(self, n) -> str:
        return self.src[n.start_byte:n.end_byte].decode("utf-8", "replace")

    # segments: (text, unquoted-expansion: subject to splitting and globbing)
    def segs(self, n, quoted: bool, first: bool, more: bool = False) -> list[tuple[str, bool]]:
        t = n.type
        if t in ("word", "number") and not quoted:
            raw = self.text(n)
            # the tilde prefix runs to the first unquoted `/`: with a quoted part or an expansion
            # before any, it is no tilde prefix (`~'/x'` stays `~/x`)
            if first and raw.startswith("~") and ("/" in raw or not more):
                raw = self._tilde(n, raw)
            text, bare = _unescape_unquoted(raw)
            if self.assign:
                if ":~" in bare:
                    raise _Dynamic(f"{raw!r}: tilde after ':' in an assignment", False)
            elif _GLOB.search(bare):
                raise _Dynamic(f"{raw!r} is a glob pattern", True)
            elif ":~" in bare or "=~" in bare:      # bash tilde-expands assignment-like arguments too
                raise _Dynamic(f"{raw!r}: a tilde after '=' or ':'", True)
            return [(text, False)]
        if t in ("word", "number", "string_content"):
            return [(_DQ_ESC.sub(lambda m: "" if m.group(1) == "\n" else m.group(1), self.text(n)), False)]
        if t == "raw_string":
            return [(self.text(n)[1:-1], False)]
        if t == "ansi_c_string":
            return [(_ansi_c(self.text(n)[2:-1]), False)]
        if t == "string":
            out = [("", False)]                 # "" is still a field
            for c in n.named_children:
                out += self.segs(c, True, False)
            return out
        if t == "concatenation":
            kids = n.children
            if not self.assign:
                self._brace_check(kids)
            out = []
            for i, c in enumerate(kids):
                if not c.is_named:
                    raise _Dynamic(f"{self.text(n)!r} has a part the scanner cannot read", True)
                out += self.segs(c, quoted, first and i == 0, more=len(kids) > 1)
            return out
        if t == "simple_expansion":
            return self._param(n, [c for c in n.children if c.type != "$"], quoted)
        if t == "expansion":
            kids = n.children
            if len(kids) < 3 or kids[0].type != "${" or kids[-1].type != "}":
                raise _Dynamic(f"{self.text(n)} is not understood", not quoted)
            return self._param(n, kids[1:-1], quoted)
        if t in ("command_substitution", "process_substitution", "arithmetic_expansion"):
            raise _Dynamic(f"{self.text(n)} is computed at run time", not quoted)
        raise _Dynamic(f"{self.text(n)!r} ({t}) is not understood", not quoted)

    def _tilde(self, n, raw: str) -> str:
        head, sep, rest = raw.partition("/")
        if head != "~":
            raise _Dynamic(f"{head} is expanded at run time", True)
        home = self.lookup("HOME", n)
        if not isinstance(home, str):
            raise _Dynamic("~ (HOME is not certain)", True)
        return home.replace("\\", "\\\\") + sep + rest

    def _brace_check(self, kids) -> None:
        """Brace expansion and glob brackets can span the pieces the grammar splits a word into."""
        bare = "".join(_unescape_unquoted(self.text(c))[1] if c.type == "word" else "\0" for c in kids)
        o = bare.find("{")
        if o >= 0 and "}" in bare[o:]:
            raise _Dynamic("brace expansion", True)
        if _GLOB.search(bare):
            raise _Dynamic(f"{''.join(self.text(c) for c in kids)!r} is a glob pattern", True)

    def _param(self, n, inner: list, quoted: bool) -> list[tuple[str, bool]]:
        if not inner or inner[0].type != "variable_name":
            many = any(c.type == "special_variable_name" and self.text(c) in ("@", "*") for c in inner)
            raise _Dynamic(f"{self.text(n)} is a positional, special or indirect parameter",
                           many or not quoted)
        name = self.text(inner[0])
        if not _NAME.match(name):
            raise _Dynamic(f"{self.text(n)} is a positional or special parameter", not quoted)
        rest = inner[1:]
        v = self.lookup(name, n)
        if not rest:
            if v is None:
                raise _Dynamic(f"{self.text(n)}: ${name} is not certain here", not quoted)
            return [("" if v is UNSET else v, not quoted)]
        op = rest[0].type
        if op not in _SPLIT_OPS or rest[0].is_named or len(rest) > 2:
            raise _Dynamic(f"{self.text(n)} uses an operator the scanner does not evaluate", not quoted)
        if v is None:
            raise _Dynamic(f"{self.text(n)}: ${name} is not certain here", not quoted)
        is_set = v is not UNSET
        use_word = (is_set and (v != "" or ":" not in op)) if op.endswith("+") else \
            not (is_set and (v != "" or ":" not in op))
        if op.endswith("?"):
            if use_word:
                raise _Dynamic(f"{self.text(n)}: the script stops here when {name} is unset", not quoted)
            return [(v, not quoted)]
        if not use_word:
            return [("" if v is UNSET else v, not quoted)] if not op.endswith("+") else [("", not quoted)]
        if len(rest) == 1:
            return [("", not quoted)]
        w = rest[1]
        if w.type in ("word", "number") and self.text(w).startswith("~"):
            raise _Dynamic(f"{self.text(n)}: tilde in a default", not quoted)
        return [(t, sp or (not quoted and w.type in ("word", "number"))) for t, sp in self.segs(w, quoted, False)]


def _fields(segs: list[tuple[str, bool]]) -> list[str]:
    fields, cur = [], None
    for text, split in segs:
        if not split:
            cur = (cur or "") + text
            continue
        parts = _IFS.split(text)
        for i, p in enumerate(parts):
            if i > 0 and cur is not None:
                fields.append(cur)
                cur = None
            if p:
                cur = (cur or "") + p
    if cur is not None:
        fields.append(cur)
    return fields


def fields(src: bytes, node, lookup: Lookup, ifs_certain: bool = True) -> list[str] | Dyn:
    """The fields one command-line word expands to, or Dyn."""
    ev = _Eval(src, lookup)
    try:
        segs = ev.segs(node, False, True)
    except _Dynamic as e:
        return Dyn(ev.text(node), not e.splits, e.why)
    if any(split for _, split in segs):
        if not ifs_certain:
            return Dyn(ev.text(node), False, "IFS is changed by the script")
        for text, split in segs:
            if split and _GLOB.search(text):
                return Dyn(ev.text(node), False, f"{ev.text(node)} expands to a glob pattern")
    return _fields(segs)


def scalar(src: bytes, node, lookup: Lookup) -> str | None:
    """The value an assignment (or here-string) gets: no splitting, no globbing, no brace
    expansion, tilde only at the start; None when not certain."""
    ev = _Eval(src, lookup, assign=True)
    try:
        return "".join(s for s, _ in ev.segs(node, False, True))
    except _Dynamic:
        return None


def heredoc_text(src: bytes, body, lookup: Lookup, expand: bool, strip_tabs: bool) -> str | None:
    """The text a here-document feeds its command, or None when it holds a part known
    only at run time. `expand` is False for a quoted delimiter (the body is literal)."""
    raw = src[body.start_byte:body.end_byte].decode("utf-8", "replace")
    if expand:
        ev = _Eval(src, lookup)
        out, at = [], body.start_byte
        for c in body.named_children:
            if c.type == "heredoc_content":
                continue
            out.append(_heredoc_literal(src[at:c.start_byte].decode("utf-8", "replace")))
            try:
                out.append("".join(s for s, _ in ev.segs(c, True, False)))
            except _Dynamic:
                return None
            at = c.end_byte
        out.append(_heredoc_literal(src[at:body.end_byte].decode("utf-8", "replace")))
        raw = "".join(out)
        if "`" in raw or "$(" in raw:     # grammar missed a substitution: do not guess
            return None
    if strip_tabs:
        raw = "\n".join(line.lstrip("\t") for line in raw.split("\n"))
    return raw


def _heredoc_literal(s: str) -> str:
    return re.sub(r"\\([$`\\\n])", lambda m: "" if m.group(1) == "\n" else m.group(1), s)
