"""Parsing shell text with tree-sitter-bash, and the few questions asked of its tree (pure).

tree-sitter is error-tolerant: a script bash would reject still yields a tree, with
ERROR and MISSING nodes where the grammar gave up. Callers ask `broken()` and treat
whatever such a tree says as unreliable. The grammar also has known gaps (several
here-documents on one line, `coproc`, some quote/expansion concatenations); `suspect()`
recognises the shapes they produce so the scanner can defer instead of trusting them.
"""

from __future__ import annotations

from functools import lru_cache

LOOPS = frozenset({"while_statement", "for_statement", "c_style_for_statement"})   # until/select share these


@lru_cache(maxsize=1)
def _parser():
    import tree_sitter_bash
    from tree_sitter import Language, Parser
    return Parser(Language(tree_sitter_bash.language()))


_ASCII = bytes(range(128)) + b"%" * 128


def parse(text: bytes):
    """The syntax tree of `text`. Every non-ASCII byte is given to the parser as `%` (a
    plain word character for bash, as a UTF-8 byte is): offsets, lines and word
    boundaries stay those of the original, whose bytes callers read back with
    `node_text`. tree-sitter-bash's scanner crashes the process on some code points
    (`{` followed by U+E0001, seen with tree-sitter-bash 0.25.1), and a job script is
    attacker-written text."""
    return _parser().parse(text.translate(_ASCII))


def node_text(src: bytes, node) -> str:
    return src[node.start_byte:node.end_byte].decode("utf-8", "replace")


def broken(root) -> list:
    """ERROR and MISSING nodes (the places where the parse is not bash's)."""
    out, stack = [], [root]
    while stack:
        n = stack.pop()
        if n.is_error or n.is_missing:
            out.append(n)
            continue
        if n.has_error:
            stack.extend(n.children)
    return out


def enclosing_start(node, kinds: frozenset) -> int | None:
    """Start byte of the outermost ancestor whose type is in kinds, or None."""
    best = None
    p = node.parent
    while p is not None:
        if p.type in kinds:
            best = p.start_byte
        p = p.parent
    return best


def effective_pos(node) -> int:
    """The earliest point at which the effect of `node` may already have happened: a
    statement in a loop body may run before earlier-written text on the next pass, and
    one in a function body whenever the function is called after its definition."""
    s = enclosing_start(node, LOOPS | {"function_definition"})
    return node.start_byte if s is None else min(s, node.start_byte)


def use_pos(node) -> int:
    """Where a variable use counts as happening: a use in a function body may run at any
    call, so it only sees what was certain where the (outermost) function was defined."""
    s = enclosing_start(node, frozenset({"function_definition"}))
    return node.start_byte if s is None else s


def is_top_level(node) -> bool:
    """A statement that the script's main sequence runs unconditionally, once, in this
    shell: a direct child of the program, not put in the background with `&`."""
    if node.parent is None or node.parent.type != "program":
        return False
    nxt = node.next_sibling
    return not (nxt is not None and nxt.type == "&")


def suspect(src: bytes, words: list) -> bool:
    """True when consecutive word nodes touch (bash would have made them one word) or a
    word holds an unnamed piece the grammar could not classify (e.g. `$"…"`)."""
    for a, b in zip(words, words[1:]):
        gap = src[a.end_byte:b.start_byte].replace(b"\\\n", b" ")
        if not gap or gap.strip(b" \t"):
            return True
    return any(not w.is_named for w in words)


def dropped_bytes(src: bytes, cmd) -> bool:
    """True when the grammar left part of a command out of every node: `apptainer run $` (the
    `$` is in the command's span but in no word) or a trailing `\\ ` after the command's end —
    bytes bash reads as (part of) a word."""
    last = max((c.end_byte for c in cmd.children), default=cmd.end_byte)
    if src[last:cmd.end_byte].replace(b"\\\n", b"").strip(b" \t"):
        return True
    rest = src[cmd.end_byte:cmd.end_byte + 256].lstrip(b" \t")
    return rest[:1] in (b"\\", b"'", b'"', b"$") and rest[:2] != b"\\\n"
