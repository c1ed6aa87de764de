"""The policy's glob language: parsed once (at load time), matched in linear time, total.

Path globs (`match.path`), matched against the image's resolved absolute path:

  `*`        any run of characters within one path segment (never `/`), possibly empty
  `?`        exactly one character, not `/`
  `**`       any run of characters, `/` included, possibly empty; written as a whole
             segment followed by `/` (`/a/**/b`) it also matches zero segments (`/a/b`)
  `[abc]`    one character of the set; `a-z` is an inclusive range (start <= end);
  `[!abc]`   one character not in the set; a bracket expression never matches `/`.
             `-` is literal first or last; write `\\]`, `\\-`, `\\\\` inside brackets for
             those characters. `[]`, `[!]`, `[^…]`, `[[:alpha:]]`, `[z-a]`, `/` inside
             brackets and an unclosed `[` are errors.
  `\\c`       the character c itself (a trailing lone `\\` is an error)
  `{`, `}`   reserved (brace expansion is not supported: list several globs instead);
  `]`        outside brackets: an error (write `\\]`)

  A path glob must be absolute (start with `/` or `**`) and must not contain empty,
  `.` or `..` segments nor end in `/`: a resolved image path never matches those, so
  such a glob would silently never apply.

Name globs (user, group, account, partition, signer subject/e-mail/issuer) are matched
with fnmatch semantics (`*` and `?` match any character, `/` included; `\\` is an
ordinary character because RFC 4514 DNs use it). Their bracket expressions follow the
same strict rules as above, so every accepted name glob means the same thing to
`fnmatch.fnmatchcase` and to `name_matches`.

Matching never backtracks exponentially, so a hostile image path cannot make a decision
slow: a glob without `**` is matched segment by segment with regexes whose middle chunks
sit in atomic groups (fnmatch's construction); a glob with `**` by simulating its automaton,
O(len(pattern) * len(text)). A literal head and tail are compared first.
"""

from __future__ import annotations

import functools

import re
from dataclasses import dataclass

from sifguard.errors import BadInputError


class GlobError(BadInputError):
    """A glob that is not in the language (the loader adds file and line)."""


# token kinds
LIT, ONE, CLASS, STAR, ANY, DIRS = range(6)


@dataclass(frozen=True)
class Glob:
    pattern: str
    tokens: tuple | None           # None: matches nothing
    path: bool
    prefix: str = ""               # literal head and tail, checked first (most rules fail there)
    suffix: str = ""
    middle: tuple = ()
    segments: tuple | None = None  # without **: one regex per path segment (see _segment_regex)

    @classmethod
    def of(cls, pattern: str, tokens: tuple, path: bool) -> "Glob":
        i = 0
        while i < len(tokens) and tokens[i][0] == LIT:
            i += 1
        j = len(tokens)
        while j > i and tokens[j - 1][0] == LIT:
            j -= 1
        segments = None
        if not path:
            segments = (_segment_regex(tokens),)
        elif not any(t[0] in (ANY, DIRS) for t in tokens):
            segs, cur = [], []
            for t in tokens:
                if t == (LIT, "/"):
                    segs.append(cur)
                    cur = []
                else:
                    cur.append(t)
            segments = tuple(_segment_regex(tuple(x)) for x in segs + [cur])
        return cls(pattern, tokens, path, "".join(t[1] for t in tokens[:i]), "".join(t[1] for t in tokens[j:]),
                   tokens[i:j], segments)

    def match(self, text) -> bool:
        """Total: anything that is not a str simply does not match."""
        if not isinstance(text, str) or self.tokens is None:
            return False
        p, s = self.prefix, self.suffix
        if len(text) < len(p) + len(s) or not text.startswith(p) or not text.endswith(s):
            return False
        if self.segments is not None:
            parts = text.split("/") if self.path else (text,)
            return len(parts) == len(self.segments) and all(
                r.fullmatch(x) is not None for r, x in zip(self.segments, parts))
        mid = text[len(p):len(text) - len(s)]
        if self.middle == ((ANY,),):                 # "/apps/**": any tail
            return True
        if self.middle == ((STAR,),):                # "/a/*.sif": one segment's worth
            return "/" not in mid
        return _run(self.middle, mid, self.path)


NEVER = Glob("<invalid glob>", None, True)     # what an invalid glob matches: nothing


def _class(p: str, i: int, path: bool) -> tuple[tuple, int]:
    """Parse a bracket expression starting after '['; return (token, index after ']')."""
    n = len(p)
    negate = False
    if i < n and p[i] == "!":
        negate, i = True, i + 1
    if i < n and p[i] == "^":
        raise GlobError("'[^' is ambiguous: write '[!' for a negated bracket expression")
    items: list[tuple[str, str]] = []
    first = True

    def one(j: int) -> tuple[str, int]:
        c = p[j]
        if c == "\\" and path:
            if j + 1 >= n:
                raise GlobError("a trailing '\\' escapes nothing")
            return p[j + 1], j + 2
        if c == "/" and path:
            raise GlobError("a bracket expression cannot match '/'")
        if c == "[" and j + 1 < n and p[j + 1] in ":.=":
            raise GlobError("POSIX classes like '[:alpha:]' are not supported")
        return c, j + 1

    while True:
        if i >= n:
            raise GlobError("unclosed '['")
        if p[i] == "]":
            if first:
                raise GlobError("empty bracket expression" + (" (write '\\]' for a literal ']')" if path else ""))
            return (CLASS, tuple(items), negate), i + 1
        lo, i = one(i)
        if i + 1 < n and p[i] == "-" and p[i + 1] != "]":
            hi, i = one(i + 1)
            if lo > hi:
                raise GlobError(f"reversed range '{lo}-{hi}'")
            items.append((lo, hi))
        else:
            items.append((lo, lo))
        first = False


def parse(pattern: str, path: bool = True) -> tuple:
    """Tokens of a glob; GlobError says what is wrong."""
    if not isinstance(pattern, str) or not pattern:
        raise GlobError("an empty glob")
    if "\x00" in pattern:
        raise GlobError("a NUL character")
    p, n, i, out = pattern, len(pattern), 0, []
    while i < n:
        c = p[i]
        if c == "*":
            j = i
            while j < n and p[j] == "*":
                j += 1
            if not path:
                out.append((ANY,))
            elif j - i == 1:
                out.append((STAR,))
            elif (i == 0 or p[i - 1] == "/") and j < n and p[j] == "/":
                out.append((DIRS,))
                j += 1
            else:
                out.append((ANY,))
            i = j
        elif c == "?":
            out.append((ONE,))
            i += 1
        elif c == "[":
            tok, i = _class(p, i + 1, path)
            out.append(tok)
        elif c == "\\" and path:
            if i + 1 >= n:
                raise GlobError("a trailing '\\' escapes nothing")
            out.append((LIT, p[i + 1]))
            i += 2
        elif c == "]" and path:
            raise GlobError("unbalanced ']' (write '\\]' for a literal ']')")
        elif c in "{}" and path:
            raise GlobError(f"'{c}': brace expansion is not supported (list several globs; write '\\{c}' "
                            "for the character)")
        else:
            out.append((LIT, c))
            i += 1
    if path:
        _check_path_shape(pattern)
    return tuple(out)


def _check_path_shape(p: str) -> None:
    if not (p.startswith("/") or p.startswith("**")):
        raise GlobError("a path glob must be absolute (start with '/' or '**'): image paths are resolved")
    if p.endswith("/"):
        raise GlobError("a path glob ending in '/' never matches an image file (add '**' or '*')")
    for s in p.split("/")[1:] if p.startswith("/") else p.split("/"):
        if s in ("", ".", ".."):
            raise GlobError(f"a path glob with {'an empty' if not s else 'a ' + repr(s)} segment never matches a "
                            "resolved path")


def compile_path(pattern: str) -> Glob:
    return Glob.of(pattern, parse(pattern, path=True), True)


def compile_name(pattern: str) -> Glob:
    return Glob.of(pattern, parse(pattern, path=False), False)


def name_matches(pattern: str, value) -> bool:
    """fnmatchcase semantics for a valid name glob; False (never an exception) otherwise."""
    g = _cached_name(pattern)
    return g is not None and g.match(value)


@functools.lru_cache(maxsize=1024)
def _cached_name(pattern: str):
    try:
        return compile_name(pattern)
    except (GlobError, TypeError):
        return None


# --- matching ---------------------------------------------------------------------------
def _char(c: str) -> str:
    return f"\\U{ord(c):08x}"


def _segment_regex(tokens: tuple) -> "re.Pattern":
    """A regex for tokens in which every star may match any character (one path segment, or
    a name glob). Chunks between stars have a fixed length, so the earliest place each
    middle chunk fits is always a right choice: it is matched lazily inside an atomic group
    and never revisited (fnmatch's construction) — no exponential backtracking."""
    chunks = [[]]
    for t in tokens:
        if t[0] in (STAR, ANY, DIRS):
            chunks.append([])
        else:
            chunks[-1].append(t)

    def fixed(ts) -> str:
        out = []
        for t in ts:
            if t[0] == LIT:
                out.append(_char(t[1]))
            elif t[0] == ONE:
                out.append(".")
            else:
                body = "".join(_char(lo) if lo == hi else f"{_char(lo)}-{_char(hi)}" for lo, hi in t[1])
                out.append(f"[{'^' if t[2] else ''}{body}]")
        return "".join(out)

    if len(chunks) == 1:
        rx = fixed(chunks[0])
    else:
        rx = fixed(chunks[0]) + "".join(f"(?>.*?{fixed(c)})" for c in chunks[1:-1]) + ".*" + fixed(chunks[-1])
    return re.compile(rx, re.S)


def _closure(tokens: tuple, states: set) -> set:
    """Add the states reachable without consuming: past *, ** and **/ (zero length)."""
    todo, seen = list(states), set(states)
    while todo:
        s = todo.pop()
        if s < len(tokens) and tokens[s][0] in (STAR, ANY, DIRS):
            if s + 1 not in seen:
                seen.add(s + 1)
                todo.append(s + 1)
    return seen


def _run(tokens: tuple, text: str, path: bool) -> bool:
    m = len(tokens)
    pend = m + 1                       # DIRS token i "inside a segment" is state pend + i
    states = _closure(tokens, {0})
    for ch in text:
        nxt = set()
        slash = ch == "/"
        for s in states:
            if s >= pend:              # inside `**/`: any character; '/' ends a segment
                i = s - pend
                nxt.add(i if slash else s)
                continue
            if s == m:
                continue
            t = tokens[s]
            k = t[0]
            if k == LIT:
                if ch == t[1]:
                    nxt.add(s + 1)
            elif k == ONE:
                if not (slash and path):
                    nxt.add(s + 1)
            elif k == CLASS:
                if not (slash and path):
                    hit = any(lo <= ch <= hi for lo, hi in t[1])
                    if hit != t[2]:
                        nxt.add(s + 1)
            elif k == STAR:
                if not slash:
                    nxt.add(s)
            elif k == ANY:
                nxt.add(s)
            elif k == DIRS:
                nxt.add(s if slash else pend + s)
        if not nxt:
            return False
        states = _closure(tokens, nxt)
    return m in states
